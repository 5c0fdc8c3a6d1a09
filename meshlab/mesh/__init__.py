"""The mesh: the sidecar proxy, its control plane (pilot, citadel, mixer) and the sample apps it carries."""
