"""Mixer: the classic-profile policy and telemetry service (see :mod:`meshlab.mesh.mixer.core`)."""
