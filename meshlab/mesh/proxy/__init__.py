"""The sidecar proxy: a small Envoy configured only by xDS.

The decision core is sans-I/O (``config``, ``routing``, ``policies``, ``retrying``, ``balancing``, ``circuit``,
``outlier``, ``accesslog``); ``xds_client`` is the ADS stream that feeds ``config``. The HTTP shell that moves
bytes calls into these modules and decides nothing itself.
"""
