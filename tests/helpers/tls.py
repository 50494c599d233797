"""A certificate authority made in the test, and the TLS contexts of loopback servers.

:class:`CertificateAuthority` signs server and client certificates with EC P-256 keys (fast to
make), valid from an hour ago for a day unless a test asks for an expired or a not-yet-valid
one. Names that parse as IP addresses go in the certificate as IP SANs, others as DNS names.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_HOUR = datetime.timedelta(hours=1)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM."""

    cert_pem: bytes
    key_pem: bytes
    serial: int

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.crt`` and ``<stem>.key`` into ``directory``; return their paths."""
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key

    def server_context(
        self, directory: Path, client_ca: CertificateAuthority | None = None
    ) -> ssl.SSLContext:
        """A server context presenting this certificate; with ``client_ca``, one that requires
        a client certificate signed by it (mutual TLS)."""
        cert, key = self.write(directory, f"server-{self.serial}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=client_ca.cert_pem.decode())
        return context


class CertificateAuthority:
    def __init__(self, name: str = "onegate test CA") -> None:
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _HOUR)
            .not_valid_after(now + 24 * _HOUR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, name: str = "ca.pem") -> Path:
        path = directory / name
        path.write_bytes(self.cert_pem)
        return path

    def issue(
        self,
        *names: str,
        client: bool = False,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> Issued:
        """A leaf certificate for ``names`` (server use, or client use with ``client``)."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        alternatives: list[x509.GeneralName] = []
        for name in names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        serial = x509.random_serial_number()
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "client")]
        )
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(not_before or now - _HOUR)
            .not_valid_after(not_after or now + 24 * _HOUR)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if alternatives:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(alternatives), critical=False
            )
        certificate = builder.sign(self.key, hashes.SHA256())
        return Issued(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key), serial)


def peer_serial(
    host: str, port: int, ca: CertificateAuthority, server_name: str | None = None
) -> int:
    """Serial number of the certificate a new TLS connection to ``host:port`` is shown."""
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    with (
        socket.create_connection((host, port), timeout=5.0) as raw,
        context.wrap_socket(raw, server_hostname=server_name or host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


class TlsHttpServer:
    """A threaded HTTPS server (``http.server`` over blocking TLS sockets) answering every
    GET with ``body``; it counts the requests it answered in ``requests``.

    Unlike an asyncio server, a blocking TLS socket sends the handshake's alert before it
    closes (asyncio aborts without it), as real servers (nginx, Go) do: the gateway's
    mutual-TLS errors are tested against this one."""

    def __init__(self, context: ssl.SSLContext, body: bytes = b"ok") -> None:
        outer = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        accepted: list[socket.socket] = []
        self._accepted = accepted

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, object]:
                raw, address = self.socket.accept()
                accepted.append(raw)
                return context.wrap_socket(
                    raw, server_side=True, do_handshake_on_connect=False
                ), address

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # refused handshakes are what some tests are about

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)
        # Daemon handler threads may still hold kept-alive connections: close them here, not
        # whenever the collector finds them (a ResourceWarning in some later test).
        for raw in self._accepted:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
            raw.close()
