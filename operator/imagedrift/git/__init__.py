"""The git adapter: repositories the operator reads and commits to (GitOps write-back)."""
