"""The ``meshlab`` command line."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from meshlab.cluster.labdir import LabDir
from meshlab.errors import MeshlabError

# The lab's machinery (supervisor, jupyter) is imported only by the commands that need it: `meshlab app ...`
# is what every meshlab container runs, and must start fast and small.


def _cluster(args: argparse.Namespace) -> int:
    from meshlab.cluster import supervisor

    lab = LabDir.named(args.name)
    if args.action == "up":
        info = supervisor.up(lab, port=args.port)
        print(f"lab {lab.name!r} is running on https://127.0.0.1:{info['port']} (pid {info['pid']})")
        print(f"  export KUBECONFIG={lab.kubeconfig}")
        return 0
    if args.action == "down":
        print(f"lab {lab.name!r} stopped" if supervisor.down(lab) else f"lab {lab.name!r} was not running")
        return 0
    if args.action == "kubeconfig":
        if not lab.kubeconfig.exists():
            print(f"lab {lab.name!r} has never been started: run `meshlab cluster up`", file=sys.stderr)
            return 1
        print(lab.kubeconfig)
        return 0
    found = supervisor.running(lab)
    if found is None:
        print(f"lab {lab.name!r}: not running (start it with `meshlab cluster up`)")
        return 3
    from meshlab.cluster.health import format_table, lab_health

    print(f"lab {lab.name!r}: running (pid {found['pid']}), state in {lab.path}")
    print(f"  export KUBECONFIG={lab.kubeconfig}\n")
    rows = lab_health(lab, int(found["port"]))
    print(format_table(rows))
    return 0 if all(r.healthy for r in rows) else 2


def _pilot(args: argparse.Namespace) -> int:
    from meshlab.mesh.pilot import main as pilot

    return pilot.run(args)


def _mesh(args: argparse.Namespace) -> int:
    import meshlab.lab
    from meshlab.mesh import installing
    from meshlab.mesh.citadel.settings import TRUST_DOMAIN, WORKLOAD_CERT_TTL, settings_from_mesh

    # Checked before the cluster is touched: a bad flag changes nothing.
    security = settings_from_mesh({TRUST_DOMAIN: args.trust_domain, WORKLOAD_CERT_TTL: args.workload_cert_ttl})
    lab = meshlab.lab.connect(args.kubeconfig)
    try:
        if args.action == "install":
            installing.install(lab, timeout=args.timeout, security=security, profile=args.profile)
            print(installing.format_status(installing.status(lab)))
            return 0
        if args.action == "profile":
            from meshlab.mesh.mixer.profile import current_profile, set_profile

            if args.target is None:
                print(current_profile(lab))
                return 0
            for line in set_profile(lab, args.target, timeout=args.timeout):
                print(line)
            return 0
        if args.action == "uninstall":
            for name in installing.uninstall(lab, purge=args.purge, timeout=args.timeout):
                print(f"{name} deleted")
            return 0
        if args.action in ("top", "stat"):
            from meshlab import telemetry
            from meshlab.telemetry.table import format_stat, format_top

            if args.action == "top":
                print(format_top(telemetry.graph(lab, namespace=args.namespace, window=args.window)))
            else:
                print(format_stat(telemetry.golden_signals(lab, namespace=args.namespace, window=args.window)))
            return 0
        if args.action == "proxy-status":
            print(installing.format_table(installing.proxy_status(lab)))
            return 0
        state = installing.status(lab)
        print(installing.format_status(state))
        return 0 if state.healthy else 3
    finally:
        lab.close()


def _inject(args: argparse.Namespace) -> int:
    """``istioctl kube-inject``: the manifest with sidecars, as YAML on stdout."""
    import yaml

    from meshlab.mesh.injection import config_from_mesh, inject_manifest

    text = sys.stdin.read() if str(args.filename) == "-" else Path(args.filename).read_text()
    mode = args.mode or _cluster_mode(args.kubeconfig)
    docs = inject_manifest(yaml.safe_load_all(text), config=config_from_mesh({"mode": mode}))
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


def _cluster_mode(kubeconfig: Path | None) -> str:
    """The installed mesh's interception mode, else the one the cluster's nodes call for; ``address`` (the
    embedded lab's) when no cluster can be reached."""
    import meshlab.lab
    from meshlab.mesh import installing

    try:
        lab = meshlab.lab.connect(kubeconfig)
    except MeshlabError:
        return "address"
    try:
        config = installing.mesh_config(lab)
        return config.mode if config is not None else installing.cluster_mode(lab)
    except Exception as err:  # unreachable, refused: inject offline, as istioctl does with --injectConfigFile
        print(f"meshlab inject: cluster not reachable ({err.__class__.__name__}); using --mode address",
              file=sys.stderr)
        return "address"
    finally:
        lab.close()


def _lab(args: argparse.Namespace) -> int:
    from meshlab import jupyter

    return jupyter.run(kubeconfig=args.kubeconfig, port=args.port, open_browser=not args.no_browser)


# The sample apps: `meshlab app NAME` (what a meshlab/NAME image runs).
APPS = (
    ("echo", "meshlab.mesh.apps.echo", "answer every HTTP request with JSON about the request and the pod"),
    ("productpage", "meshlab.mesh.apps.bookstore.productpage",
     "the bookstore's front end: an HTML page and a JSON API (port 9080)"),
    ("details", "meshlab.mesh.apps.bookstore.details", "the bookstore's book details (port 9080)"),
    ("reviews", "meshlab.mesh.apps.bookstore.reviews", "the bookstore's reviews, v1/v2/v3 (port 9080)"),
    ("ratings", "meshlab.mesh.apps.bookstore.ratings", "the bookstore's star ratings (port 9080)"),
    ("httpbin", "meshlab.mesh.apps.httpbin",
     "an httpbin-like test backend: /status/CODE, /delay/S, /headers (port 8000)"),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; ``command`` names the subcommand about to run. The sample apps and the load generator
    (aiohttp, ~0.3 s to import) are loaded only for ``app`` and ``load``, or for help (``None``), so a FlexVolume
    driver call or a FUSE daemon that a pod waits for starts fast."""
    full = command in (None, "app", "load")
    parser = argparse.ArgumentParser(prog="meshlab", description="Learn service meshes and Kubernetes storage.")
    sub = parser.add_subparsers(dest="command", required=True)
    cluster = sub.add_parser("cluster", help="manage the embedded lab cluster")
    cluster.add_argument("action", choices=["up", "down", "status", "kubeconfig"])
    cluster.add_argument("--name", default="default", help="lab name (default: default)")
    cluster.add_argument("--port", type=int, default=None, help="apiserver port (default: 6443 or a free one)")
    cluster.set_defaults(func=_cluster)
    app = sub.add_parser("app", help="run a sample app in the foreground (what a meshlab/<app> image runs)")
    load_p = sub.add_parser("load", help="send HTTP load at a fixed rate or concurrency and report latencies")
    if full:
        apps = app.add_subparsers(dest="app", required=True)
        for name, module_name, about in APPS:
            module = importlib.import_module(module_name)
            app_p = apps.add_parser(name, help=about)
            module.add_arguments(app_p)
            app_p.set_defaults(func=module.run)
        from meshlab.mesh import load

        load.add_arguments(load_p)
        load_p.set_defaults(func=load.run)
    pilot_p = sub.add_parser("pilot", help="run the mesh control plane (what the istiod Deployment runs)")
    # Arguments written here, not by the pilot module: importing it (gRPC, protobufs) would slow every app.
    pilot_p.add_argument("--xds-port", type=int, default=15010, help="ADS gRPC port (default 15010, as istiod)")
    pilot_p.add_argument("--debug-port", type=int, default=8080, help="HTTP /ready and /debug/* (default 8080)")
    pilot_p.add_argument("--webhook-port", type=int, default=15017,
                         help="HTTPS sidecar injector webhook (default 15017, as istiod)")
    pilot_p.add_argument("--kubeconfig", default=None,
                         help="cluster to watch (default: the pod's service account, else $KUBECONFIG)")
    pilot_p.set_defaults(func=_pilot)
    mesh = sub.add_parser("mesh", help="install, remove or inspect the mesh control plane (like istioctl)")
    mesh.add_argument("action", choices=["install", "uninstall", "status", "proxy-status", "top", "stat", "profile"])
    mesh.add_argument("target", nargs="?", choices=["classic", "modern"], default=None,
                      help="profile: switch the running mesh's telemetry to classic (Mixer) or modern (in-proxy); "
                           "without it, print the current profile")
    mesh.add_argument("--profile", choices=["classic", "modern"], default="modern",
                      help="install: the telemetry profile (default modern)")
    mesh.add_argument("--kubeconfig", type=Path, default=None, help="cluster (default: the running embedded lab)")
    mesh.add_argument("--timeout", type=float, default=60, help="seconds to wait for istiod (default 60)")
    mesh.add_argument("--purge", action="store_true", help="uninstall: also delete the CRDs and every VS/DR")
    mesh.add_argument("--trust-domain", default="", help="install: the SPIFFE trust domain (default cluster.local)")
    mesh.add_argument("--workload-cert-ttl", default="",
                      help="install: lifetime of workload certificates, e.g. 60s to watch rotation (default 24h)")
    mesh.add_argument("--namespace", "-n", default=None, help="top/stat: only this namespace (default: all)")
    mesh.add_argument("--window", type=float, default=10.0, help="top/stat: seconds between two scrapes (default 10)")
    mesh.set_defaults(func=_mesh)
    inject = sub.add_parser("inject", help="add sidecars to a manifest's pods, like istioctl kube-inject")
    inject.add_argument("-f", "--filename", required=True, help="the manifest (YAML; - for stdin)")
    inject.add_argument("--mode", choices=["address", "iptables"], default=None,
                        help="interception (default: the installed mesh's, else the cluster's, else address)")
    inject.add_argument("--kubeconfig", type=Path, default=None, help="cluster (default: the running embedded lab)")
    inject.set_defaults(func=_inject)
    proxy_p = sub.add_parser("proxy", help="run the sidecar proxy (istio-proxy): configured by Pilot over xDS")
    from meshlab.mesh.proxy import main as proxy_main

    proxy_main.add_arguments(proxy_p)
    proxy_p.set_defaults(func=proxy_main.run)
    lab = sub.add_parser("lab", help="start the embedded lab (or use --kubeconfig) and JupyterLab on notebooks/")
    lab.add_argument("--kubeconfig", type=Path, default=None, help="use this cluster instead of the embedded lab")
    lab.add_argument("--port", type=int, default=None, help="JupyterLab's port (default: 8888 or a free one)")
    lab.add_argument("--no-browser", action="store_true", help="print the URL without opening a browser")
    lab.set_defaults(func=_lab)
    for extension in _EXTENSIONS:
        importlib.import_module(extension).add_commands(sub)
    return parser


# Each area registers its own subcommands (``add_commands(sub)``, argparse only: heavy imports happen inside
# the handlers, so every `meshlab app ...` container still starts small).
_EXTENSIONS = (
    "meshlab.storage.nfsd.commands",        # meshlab nfs-server
    "meshlab.mounting.commands",            # meshlab mount-nfs (the FUSE client a lab mount runs)
    "meshlab.storage.flexvolume.commands",  # meshlab flexvolume ... (the FlexVolume driver executable)
    "meshlab.storage.csi.commands",         # meshlab csi-driver, meshlab csi-registrar, meshlab csi-provisioner
    "meshlab.storage.commands",             # meshlab storage install|uninstall|status
    "meshlab.mesh.citadel.commands",        # meshlab citadel
    "meshlab.mesh.tracing.commands",        # meshlab tracing-collector (the zipkin Deployment)
    "meshlab.mesh.mixer.commands",          # meshlab mixer (the istio-mixer Deployment, classic profile)
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv and not argv[0].startswith("-") else None).parse_args(argv)
    try:
        return int(args.func(args))
    except MeshlabError as err:
        print(f"meshlab: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
