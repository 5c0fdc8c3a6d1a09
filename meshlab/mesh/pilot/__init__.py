"""Pilot: Kubernetes state in, Envoy v3 configuration out, served to sidecars over ADS.

``model`` (what Pilot knows) → ``translation`` + ``routes`` (pure: state → ``Snapshot`` per proxy) →
``sync`` (pure per-stream xDS protocol state) → ``ads`` (the gRPC server).
"""
