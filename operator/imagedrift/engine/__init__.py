"""Orchestration: runs the core decisions against the registry and Kubernetes adapters (no kopf)."""
