"""``/config_dump`` prints every resource Pilot sends, in a process that loaded only the proxy.

``json_format`` renders an ``Any`` only when its message type is in the process's descriptor pool. A test
process that imported Pilot has every extension type loaded, which hid the bug this guards: the sidecar's
``/config_dump`` dropped the connection as soon as a route carried Istio's default retry policy (its
``previous_hosts`` predicate). So the dump is rendered in a fresh interpreter that imports the proxy's
entry point only.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from google.protobuf import any_pb2

from meshlab.mesh.pilot.model import DestinationRule, Endpoint, MeshState, Service, ServicePort, VirtualService
from meshlab.mesh.pilot.translation import translate
from meshlab.mesh.xds.node import ProxyIdentity

CLIENT = ProxyIdentity(ip="127.0.0.10", pod="sleep-abc", namespace="default", labels={"app": "sleep"},
                       app_address="127.0.0.10:19080")
HTTPBIN = Service("httpbin", "default", "10.96.0.40", (ServicePort("http", 8000),))
ENDPOINT = Endpoint("127.0.0.41", {"http": 8000}, {"app": "httpbin", "version": "v1"}, True, "httpbin-x", "default")
POOL = {"host": "httpbin", "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 1}}},
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}
FAULT = {"hosts": ["httpbin"], "http": [{"fault": {"abort": {"httpStatus": 500, "percentage": {"value": 50}}},
                                         "route": [{"destination": {"host": "httpbin", "subset": "v1"}}]}]}

DUMP = """
import json, sys
from google.protobuf import any_pb2
from meshlab.mesh.proxy import main  # what `meshlab proxy` loads
from meshlab.mesh.proxy import admin
resources = {}
for type_url, blobs in json.loads(sys.stdin.read()).items():
    for blob in blobs:
        packed = any_pb2.Any()
        packed.ParseFromString(bytes.fromhex(blob))
        resources.setdefault(type_url, []).append(packed)
print(admin.config_dump(resources, {}))
"""


@pytest.mark.parametrize("vs,dr", [(None, None), (FAULT, POOL)], ids=["istio-defaults", "fault-and-pool"])
def test_the_dump_renders_pilots_resources_in_a_proxy_only_process(vs: dict[str, object] | None,
                                                                    dr: dict[str, object] | None) -> None:
    state = MeshState((HTTPBIN,), {("default", "httpbin"): (ENDPOINT,)},
                      (VirtualService("httpbin", "default", vs),) if vs else (),
                      (DestinationRule("httpbin", "default", dr),) if dr else ())
    snapshot = translate(state, CLIENT)
    blobs = {}
    for type_url, messages in snapshot.resources.items():
        packed = []
        for message in messages:
            wrapper = any_pb2.Any()
            wrapper.Pack(message)
            packed.append(wrapper.SerializeToString().hex())
        blobs[type_url] = packed
    proc = subprocess.run([sys.executable, "-c", DUMP], input=json.dumps(blobs), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-1000:]
    dump = json.loads(proc.stdout)
    routes = next(c for c in dump["configs"] if c["@type"].endswith("RoutesConfigDump"))
    text = json.dumps(routes)
    assert "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate" in text
    if vs:
        assert "envoy.extensions.filters.http.fault.v3.HTTPFault" in text
