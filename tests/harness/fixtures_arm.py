"""pytest fixtures for rebuild triggers (loaded by tests/conftest.py).

- ``fake_arm``: Resource Manager's ACR Tasks ``scheduleRun`` over TLS (session server,
  runs and knobs reset per test), trusting tokens from ``fake_entra``.
- ``webhook_sink``: an HTTPS endpoint recording HMAC-signed rebuild requests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import leaks
from tests.harness.arm_server import FakeArm, WebhookSink
from tests.harness.entra import FakeEntra
from tests.harness.fixtures_acr import AcrIdentities
from tests.harness.tlsca import TestCA

SINK_KEY = b"imagedrift-test-hmac-key"


@pytest.fixture(scope="session")
def _arm_session(
    acr_tls: TestCA, _entra_session: tuple[FakeEntra, AcrIdentities]
) -> Iterator[FakeArm]:
    arm = FakeArm(acr_tls, _entra_session[0]).start()
    try:
        yield arm
    finally:
        arm.stop()


@pytest.fixture
def fake_arm(_arm_session: FakeArm, fake_entra: FakeEntra) -> Iterator[FakeArm]:
    _arm_session.reset()
    yield _arm_session
    _arm_session.reset()


@pytest.fixture(scope="session")
def _sink_session(acr_tls: TestCA) -> Iterator[WebhookSink]:
    leaks.remember(SINK_KEY, "rebuild webhook HMAC key")
    sink = WebhookSink(acr_tls, SINK_KEY).start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def webhook_sink(_sink_session: WebhookSink) -> Iterator[WebhookSink]:
    _sink_session.reset()
    yield _sink_session
    _sink_session.reset()
