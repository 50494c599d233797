"""TLS pieces on their own: what a failed handshake is reported as, how it is counted, and
the listener certificate's reload (real contexts; handshakes in memory through ``MemoryBIO``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from helpers.tls import CertificateAuthority, Issued
from onegate.errors import TLS_FAILURE_REASONS, ConfigError, UpstreamTlsError
from onegate.gateway.app import Gateway
from onegate.gateway.config import ListenerTls, ServerConfig, load_config, target_problem
from onegate.gateway.exchange import Exchange
from onegate.gateway.tls import ListenerCertificate, tls_failure
from onegate.observability.families import Families
from onegate.observability.recorder import MetricsRecorder


def verification_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    error.verify_code = code
    error.verify_message = message
    error.reason = "CERTIFICATE_VERIFY_FAILED"
    return error


def alert(reason: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    error.reason = reason
    return error


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (2, "unknown-ca"),
        (9, "not-yet-valid"),
        (10, "expired"),
        (18, "unknown-ca"),
        (19, "unknown-ca"),
        (20, "unknown-ca"),
        (21, "unknown-ca"),
        (23, "revoked"),
        (62, "name-mismatch"),
        (63, "name-mismatch"),
        (64, "name-mismatch"),
        (7, "invalid-certificate"),  # certificate signature failure: none of the above
    ],
)
def test_each_verification_failure_has_its_reason(code: int, reason: str) -> None:
    error = tls_failure(verification_error(code, "the message"), "h:443", "api.example")
    assert error.reason == reason
    assert error.reason in TLS_FAILURE_REASONS
    assert error.status == 502 and error.slug == "upstream-tls-error"
    assert error.never_sent  # the handshake failed: the request never left
    assert "h:443" in error.detail and "(the message)" in error.detail
    assert ("'api.example'" in error.detail) == (reason == "name-mismatch")


@pytest.mark.parametrize(
    "reason",
    [
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "TLSV1_ALERT_ACCESS_DENIED",
    ],
)
def test_alerts_about_the_client_certificate_say_so(reason: str) -> None:
    error = tls_failure(alert(reason), "h:443", "h", handshake=False)
    assert error.reason == "client-certificate-refused"
    assert "client certificate" in error.detail
    # Refused before the session was up: nothing of the request was read, even after the
    # handshake (TLS 1.3 refuses the certificate then).
    assert error.never_sent


def test_other_tls_errors_are_handshake_failures() -> None:
    # Not an alert: a local problem with the certificate chain is no refusal by the peer.
    during = tls_failure(alert("WRONG_VERSION_NUMBER"), "h:443", "h")
    assert (during.reason, during.never_sent) == ("handshake", True)
    assert "WRONG_VERSION_NUMBER" in during.detail
    after = tls_failure(alert("DECRYPTION_FAILED_OR_BAD_RECORD_MAC"), "h:443", "h", handshake=False)
    assert (after.reason, after.never_sent) == ("handshake", False)
    # "UNKNOWN_CA" without "ALERT" is not the peer's refusal.
    assert tls_failure(alert("UNKNOWN_CA"), "h:443", "h").reason == "handshake"


def tls_counts(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == "onegate_upstream_tls_failures_total":
                found[(sample.labels["upstream"], sample.labels["reason"])] = sample.value
    return found


def test_tls_failures_are_counted_by_reason_with_a_bounded_label_set() -> None:
    from onegate.errors import UpstreamConnectError

    registry = CollectorRegistry()
    recorder = MetricsRecorder(Families(registry))

    def record(error: Exception) -> None:
        exchange = Exchange("request-1")
        exchange.status = 502
        exchange.error = error  # type: ignore[assignment]
        recorder.record(exchange, "GET", 0.001)

    record(UpstreamTlsError("x", reason="expired"))
    record(UpstreamTlsError("x", reason="expired"))
    record(UpstreamTlsError("x", reason="name-mismatch"))
    record(UpstreamTlsError("x", reason="made up by a bug"))  # never a new label value
    record(UpstreamConnectError("refused"))  # not a TLS failure
    recorder.flush()
    assert tls_counts(registry) == {
        ("none", "expired"): 2,
        ("none", "name-mismatch"): 1,
        ("none", "handshake"): 1,
    }


# --- the listener ------------------------------------------------------------------------------


def served_serial(context: ssl.SSLContext, ca: CertificateAuthority) -> int:
    """The serial of the certificate ``context`` shows a new client (handshake in memory)."""
    client = ssl.create_default_context(cadata=ca.cert_pem.decode())
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    server_side = context.wrap_bio(s_in, s_out, server_side=True)
    done = False
    for _ in range(10):
        for side in (client_side, server_side):
            try:
                side.do_handshake()
                done = done or side is client_side
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done:
            der = client_side.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der).serial_number
    raise AssertionError("no handshake")


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority()


def install(directory: Path, issued: Issued, key_of: Issued | None = None) -> None:
    (directory / "listener.crt").write_bytes(issued.cert_pem)
    (directory / "listener.key").write_bytes((key_of or issued).key_pem)


LISTENER = ListenerTls(cert_file="listener.crt", key_file="listener.key")


def test_use_loads_a_new_pair_into_the_same_context_and_keeps_the_old_on_failure(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    first, second, third = (ca.issue("127.0.0.1") for _ in range(3))
    install(tmp_path, first)
    listener = ListenerCertificate(LISTENER, tmp_path)
    context = listener.context
    assert served_serial(context, ca) == first.serial
    assert not listener.use(LISTENER, tmp_path)  # unchanged: nothing to do

    install(tmp_path, second)
    assert listener.use(LISTENER, tmp_path)
    assert listener.context is context  # the object the server listens with
    assert served_serial(context, ca) == second.serial

    install(tmp_path, third, key_of=first)  # a certificate with another's key
    with pytest.raises(ConfigError, match=r"listener\.crt"):
        listener.use(LISTENER, tmp_path)
    assert served_serial(context, ca) == second.serial


def test_poll_reloads_once_the_files_stopped_changing(
    ca: CertificateAuthority, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second, third = (ca.issue("127.0.0.1") for _ in range(3))
    install(tmp_path, first)
    listener = ListenerCertificate(LISTENER, tmp_path)
    assert not listener.poll()

    install(tmp_path, second)
    assert not listener.poll()  # changed: wait one more poll, a writer may be mid-way
    assert served_serial(listener.context, ca) == first.serial
    assert listener.poll()
    assert served_serial(listener.context, ca) == second.serial
    assert not listener.poll()

    install(tmp_path, third, key_of=first)
    with caplog.at_level(logging.ERROR, logger="onegate.tls"):
        assert not listener.poll()
        assert not listener.poll()  # tried: refused, logged
        assert not listener.poll()  # not tried again while the files stay the same
    assert len([r for r in caplog.records if "not reloaded" in r.message]) == 1
    assert served_serial(listener.context, ca) == second.serial

    install(tmp_path, third)  # fixed
    assert not listener.poll()
    assert listener.poll()
    assert served_serial(listener.context, ca) == third.serial


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"listener\.crt"):
        ListenerCertificate(LISTENER, tmp_path)


def test_what_sighup_runs_reloads_the_certificate_even_when_the_config_is_rejected(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    first, second, third = (ca.issue("127.0.0.1") for _ in range(3))
    install(tmp_path, first)
    config_path = tmp_path / "onegate.yaml"
    server = {"tls": {"cert_file": "listener.crt", "key_file": "listener.key"}}
    config_path.write_text(yaml.safe_dump({"server": server}))

    async def scenario() -> None:
        gateway = Gateway(load_config(config_path))
        try:
            assert gateway.listener is not None
            assert served_serial(gateway.listener.context, ca) == first.serial

            install(tmp_path, second)
            assert gateway.reload()  # Gateway.startup hands this to SIGHUP
            assert served_serial(gateway.listener.context, ca) == second.serial

            config_path.write_text("server: {port: not-a-port}\n")
            install(tmp_path, third)
            assert not gateway.reload()
            assert served_serial(gateway.listener.context, ca) == third.serial
        finally:
            await gateway.shutdown()

    asyncio.run(scenario())


def test_plain_http_is_the_default_and_https_targets_are_accepted() -> None:
    assert ServerConfig().tls is None
    assert target_problem("https://api.example.com") is None
    assert target_problem("https://10.0.0.5:8443") is None
    assert target_problem("ftp://api.example.com") is not None
