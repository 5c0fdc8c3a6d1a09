"""The bookstore: four small services in the spirit of Istio's Bookinfo, the mesh lessons' workload.

productpage (HTML page and JSON API) calls details and reviews; reviews v2 and v3 call ratings. Each runs as
``meshlab app <service>``; ``meshlab/mesh/manifests/bookstore.yaml`` deploys them (reviews in three
versions). :mod:`~meshlab.mesh.apps.bookstore.calling` holds what makes them mesh-friendly: calls by
Service name through ``HTTP_PROXY``, trace headers propagated, fixed timeouts.
"""
