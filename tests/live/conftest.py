"""Live tests against a real Azure Container Registry.

They are collected only when ``IMAGEDRIFT_LIVE_ACR`` names a registry (and so never show
up as skipped in an ordinary run):

    IMAGEDRIFT_LIVE_ACR=<registry>.azurecr.io IMAGEDRIFT_LIVE_ACR_IMAGE=<repository>:<tag> \\
    AZURE_TENANT_ID=.. AZURE_CLIENT_ID=.. AZURE_CLIENT_SECRET=.. \\
    pytest tests/live -m live_acr

Any identity ``DefaultAzureCredential`` finds will do (environment, workload identity,
managed identity, Azure CLI login); it needs the AcrPull role on the registry.
"""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("IMAGEDRIFT_LIVE_ACR") else ["test_*.py"]
