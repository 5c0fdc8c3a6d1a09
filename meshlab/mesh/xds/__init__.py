"""What Pilot and the sidecar proxy share about xDS: type URLs, resource naming, and the node identity.

See :mod:`meshlab.mesh.xds.resources` and :mod:`meshlab.mesh.xds.node`.
"""
