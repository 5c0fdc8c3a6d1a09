"""Manifests shipped with meshlab's mesh: the same YAML a real cluster and the embedded lab get."""
