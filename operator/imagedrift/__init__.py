"""imagedrift: keep Kubernetes workloads off stale base images."""

__version__ = "0.1.0"
