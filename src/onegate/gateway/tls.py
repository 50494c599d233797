"""TLS: the client side towards ``https://`` and ``wss`` upstreams, and the listener's certificate.

Upstreams. One :class:`ssl.SSLContext` per upstream, built once from its ``tls`` settings and
shared by its targets' pools and WebSocket connections: verification on, hostname checking on,
TLS 1.2 at least, ALPN ``http/1.1`` (the transport speaks nothing else). A failed handshake
becomes an :class:`UpstreamTlsError` whose detail says why (expired, unknown CA, name
mismatch...) and whose ``reason`` is a fixed label for the metrics.

Listener. :class:`ListenerCertificate` owns the server context uvicorn listens with and loads
a new certificate and key into that same object: ``SSL_CTX`` settings apply to handshakes that
start afterwards, so new connections get the new pair while open ones keep theirs, and no
socket is closed or re-bound.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from pathlib import Path

import certifi

from onegate.errors import ConfigError, UpstreamTlsError
from onegate.gateway.config import ListenerTls, UpstreamTls

logger = logging.getLogger("onegate.tls")

#: OpenSSL ``X509_V_ERR_*`` codes, as ``ssl.SSLCertVerificationError.verify_code`` reports
#: them, mapped to the reason counted in metrics and explained in the problem's detail.
_VERIFY_REASONS = {
    2: "unknown-ca",  # unable to get issuer certificate
    9: "not-yet-valid",
    10: "expired",
    18: "unknown-ca",  # self-signed certificate
    19: "unknown-ca",  # self-signed certificate in chain
    20: "unknown-ca",  # unable to get local issuer certificate
    21: "unknown-ca",  # unable to verify the first certificate
    23: "revoked",
    62: "name-mismatch",  # hostname mismatch
    63: "name-mismatch",  # email address mismatch
    64: "name-mismatch",  # IP address mismatch
}
_EXPLANATIONS = {
    "expired": "its certificate has expired",
    "not-yet-valid": "its certificate is not valid yet",
    "unknown-ca": "its certificate is not signed by a trusted CA (unknown CA: set the "
    "upstream's tls.ca_file to the CA that signed it)",
    "revoked": "its certificate was revoked",
    "invalid-certificate": "its certificate is invalid",
}
#: Alerts the upstream sends when it does not accept the gateway's client certificate (or
#: wanted one): mutual TLS failed on the upstream's side.
_CLIENT_CERTIFICATE_ALERTS = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
    "UNSUPPORTED_CERTIFICATE",
    "ACCESS_DENIED",
)


def _resolve(path: str, directory: Path | None) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() or directory is None else directory / candidate


def client_context(tls: UpstreamTls, directory: Path | None) -> ssl.SSLContext:
    """The context an upstream's ``https://`` targets are reached with.

    Raises :class:`ConfigError` (key ``tls.<field>``) when a file cannot be read or used."""
    if tls.ca_file is not None:
        ca_file = _resolve(tls.ca_file, directory)
        try:
            context = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            message = f"cannot load CA file {str(ca_file)!r}: {_why(exc)}"
            raise ConfigError(message, key="ca_file") from None
    else:
        context = ssl.create_default_context()
        if not context.cert_store_stats()["x509_ca"] and not _has_ca_directory():
            # A slim container without ca-certificates: certifi's bundle rather than no trust
            # at all (which would refuse every public upstream).
            context.load_verify_locations(cafile=certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    if tls.client_cert is not None:
        cert = _resolve(tls.client_cert, directory)
        key = _resolve(tls.client_key, directory) if tls.client_key is not None else None
        try:
            context.load_cert_chain(str(cert), str(key) if key is not None else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load client certificate {str(cert)!r}: {_why(exc)}", key="client_cert"
            ) from None
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _has_ca_directory() -> bool:
    """Whether OpenSSL's default CA directory holds certificates (read lazily, not counted)."""
    directory = ssl.get_default_verify_paths().capath
    return directory is not None and any(Path(directory).glob("*.0"))


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)


def tls_failure(
    exc: ssl.SSLError, where: str, server_name: str, *, handshake: bool = True
) -> UpstreamTlsError:
    """The error a failed TLS exchange with ``where`` (``host:port``) is answered with.

    ``handshake``: the error came while connecting, so the upstream cannot have read any of
    the request. A client-certificate alert after the handshake (TLS 1.3 sends it then) also
    means the upstream refused the session before reading anything."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = _VERIFY_REASONS.get(exc.verify_code, "invalid-certificate")
        message = exc.verify_message or exc.reason or "verification failed"
        if reason == "name-mismatch":
            explanation = (
                f"its certificate is not valid for {server_name!r} (name mismatch: set the "
                "upstream's tls.server_name if the certificate names the service otherwise)"
            )
        else:
            explanation = _EXPLANATIONS[reason]
        return UpstreamTlsError(
            f"TLS certificate of upstream {where} not accepted: {explanation} ({message})",
            reason=reason,
        )
    alert = (exc.reason or "").upper()
    if "ALERT" in alert and any(name in alert for name in _CLIENT_CERTIFICATE_ALERTS):
        return UpstreamTlsError(
            f"upstream {where} refused the TLS session: it requires a client certificate it "
            f"trusts (set the upstream's tls.client_cert) ({exc.reason})",
            reason="client-certificate-refused",
        )
    return UpstreamTlsError(
        f"TLS handshake with upstream {where} failed: {exc.reason or exc}",
        reason="handshake",
        never_sent=handshake,
    )


class ListenerCertificate:
    """The listener's certificate and key, loaded into one server context again on demand."""

    def __init__(self, tls: ListenerTls, directory: Path | None) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.set_alpn_protocols(["http/1.1"])
        self.cert_file = self.key_file = Path()
        self.fingerprint: str | None = None
        self._seen: str | None = None
        self._failed: str | None = None
        self.use(tls, directory)

    def use(self, tls: ListenerTls, directory: Path | None, *, force: bool = False) -> bool:
        """Load the pair ``tls`` names unless it is the one in use (SIGHUP, reload); ``force``
        loads it even then.

        Returns True if a pair was loaded. Raises :class:`ConfigError` when the pair cannot
        be used; the previous one then stays in use."""
        cert_file = _resolve(tls.cert_file, directory)
        key_file = _resolve(tls.key_file, directory)
        fingerprint = self._digest(cert_file, key_file)
        current = (cert_file, key_file, fingerprint) == (
            self.cert_file,
            self.key_file,
            self.fingerprint,
        )
        if current and not force:
            return False
        # Tried on a scratch context first: a failed load_cert_chain can leave a context
        # with the new certificate and no key, which would fail every new handshake.
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
            self.context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the certificate {str(cert_file)!r} with the key "
                f"{str(key_file)!r}: {_why(exc)}",
                key="server.tls",
            ) from None
        reloaded = self.fingerprint is not None
        self.cert_file, self.key_file, self.fingerprint = cert_file, key_file, fingerprint
        self._seen = None
        if reloaded:
            logger.info("listener certificate reloaded from %s", cert_file)
        return True

    def poll(self) -> bool:
        """Called every second: load the pair again once its files changed and then stayed
        the same for one more poll (a renewal tool may write the two files one after the
        other). Returns True if a new pair was loaded; a pair that fails is logged once."""
        try:
            fingerprint = self._digest(self.cert_file, self.key_file)
        except ConfigError:
            return False  # mid-replacement: look again next time
        if fingerprint in (self.fingerprint, self._failed):
            self._seen = None
            return False
        if fingerprint != self._seen:
            self._seen = fingerprint
            return False
        current = ListenerTls(cert_file=str(self.cert_file), key_file=str(self.key_file))
        try:
            return self.use(current, None, force=True)
        except ConfigError as error:
            self._failed = fingerprint  # tried once; again only when the files change again
            self._seen = None
            logger.error("listener certificate not reloaded, the previous one stays: %s", error)
            return False

    @staticmethod
    def _digest(cert_file: Path, key_file: Path) -> str:
        digest = hashlib.sha256()
        try:
            for path in (cert_file, key_file):
                digest.update(path.read_bytes())
                digest.update(b"\0")
        except OSError as exc:
            message = f"cannot read {exc.filename!r}: {exc.strerror}"
            raise ConfigError(message, key="server.tls") from None
        return digest.hexdigest()
