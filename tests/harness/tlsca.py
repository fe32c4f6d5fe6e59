"""A throwaway certificate authority and a loopback server certificate for TLS tests.

The Azure SDKs refuse plain HTTP for bearer tokens, so the fake ACR and the fake Entra ID
serve HTTPS with a certificate for ``127.0.0.1`` and ``localhost`` signed by this CA;
clients trust it through ``connection_verify=<ca.pem>``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TestCA:
    """Paths of the PEM files one CA and its loopback server certificate were written to."""

    __test__ = False  # not a pytest test class despite the name

    ca_cert: Path
    server_cert: Path
    server_key: Path

    def server_context(self) -> ssl.SSLContext:
        """An SSL context for a server presenting the loopback certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.server_cert), str(self.server_key))
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """An SSL context for a client that trusts only this CA."""
        return ssl.create_default_context(cafile=str(self.ca_cert))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "imagedrift tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Authority:
    """A CA in memory: issues leaf certificates valid over the same window as itself."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    not_before: datetime.datetime
    not_after: datetime.datetime

    def issue(
        self,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName] | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A new key and a certificate for ``subject`` with one extended key usage."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before)
            .not_valid_after(self.not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key


def new_authority(name: x509.Name, *, days: int) -> Authority:
    """A self-signed CA valid from five minutes ago (clock skew) for ``days`` days."""
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + datetime.timedelta(days=days)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key, not_before, not_after)


def make_test_ca(directory: Path, *, days: int = 2) -> TestCA:
    """Create a CA and a server certificate (SAN IP 127.0.0.1, DNS localhost) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = new_authority(_name("imagedrift test CA"), days=days)
    server_cert, server_key = ca.issue(
        _name("localhost"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )

    paths = TestCA(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
    )
    paths.ca_cert.write_bytes(pem_cert(ca.cert))
    paths.server_cert.write_bytes(pem_cert(server_cert))
    paths.server_key.write_bytes(pem_key(server_key))
    paths.server_key.chmod(0o600)
    return paths


class _TlsHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], ctx: ssl.SSLContext
    ) -> None:
        super().__init__(address, handler)
        self._ctx = ctx

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        # The handshake runs in the handler's thread, so one slow client cannot stall accept().
        return self._ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping keep-alive connections or failing the handshake are routine here.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError | ssl.SSLError):
            return
        super().handle_error(request, client_address)


class TlsServer:
    """A threaded HTTPS server on a free 127.0.0.1 port, started and stopped explicitly."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], ca: TestCA, *, name: str) -> None:
        self.name = name
        self._httpd = _TlsHTTPServer(("127.0.0.1", 0), handler, ca.server_context())
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name=name, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def httpd(self) -> ThreadingHTTPServer:
        return self._httpd

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler with helpers for bodies; logs nothing to stderr."""

    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end on their own

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def read_form(self) -> dict[str, str]:
        return {
            k: v[-1] for k, v in parse_qs(self.read_body().decode(), keep_blank_values=True).items()
        }

    def send_bytes(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        head_only: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head_only and body:
            self.wfile.write(body)

    def send_json(
        self, status: int, payload: Any, *, headers: dict[str, str] | None = None
    ) -> None:
        self.send_bytes(status, json.dumps(payload).encode(), headers=headers)
