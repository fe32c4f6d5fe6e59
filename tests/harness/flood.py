"""Many slow TLS clients at once, for tests of the push-event receiver under a flood."""

from __future__ import annotations

import resource
import socket
import ssl

from tests.harness.tlsca import TestCA


def tls_connect(acr_tls: TestCA, port: int, *, timeout: float = 10.0) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return acr_tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1")


def still_open(sock: ssl.SSLSocket) -> bool:
    """True while the server has neither closed nor answered ``sock`` (checked now)."""
    sock.setblocking(False)
    try:
        sock.recv(1)
    except ssl.SSLWantReadError:
        return True
    except OSError:
        return False
    return False


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise AssertionError(f"this test needs {needed} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
