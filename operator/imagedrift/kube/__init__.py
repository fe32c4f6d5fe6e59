"""The Kubernetes adapter: the only code that talks to the API server (besides kopf itself)."""
