"""Configuration of metrics, the access log and tracing."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from onegate.model import Model, Network


class MetricsConfig(Model):
    enabled: bool = True
    path: str = "/metrics"
    """Served without credentials to peers in ``public_networks``; others need the admin scope."""
    public_networks: list[Network] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    """CIDRs whose peers may read the metrics without credentials (loopback by default)."""


class AccessLogConfig(Model):
    enabled: bool = True
    """One JSON object per request. Never headers, query strings or bodies: they carry
    credentials."""
    stream: Literal["stdout", "stderr"] = "stdout"


class TracingConfig(Model):
    exporter: Literal["none", "console", "otlp"] = "none"
    """``none``: no tracing at all, and a client's ``traceparent`` reaches the upstream as
    sent. ``console``: spans as JSON lines on stderr. ``otlp``: OTLP/HTTP to ``endpoint``."""
    endpoint: str | None = None
    """OTLP/HTTP traces endpoint, e.g. ``http://collector:4318/v1/traces``. None: the
    OpenTelemetry default (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, else localhost:4318)."""
    service_name: str = "onegate"
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Share of new traces recorded; a sampled-in or sampled-out parent is always followed."""

    @field_validator("endpoint")
    @classmethod
    def _http_endpoint(cls, endpoint: str | None) -> str | None:
        if endpoint is not None:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{endpoint!r}: expected an http:// or https:// URL")
        return endpoint


class ObservabilityConfig(Model):
    metrics: MetricsConfig = MetricsConfig()
    access_log: AccessLogConfig = AccessLogConfig()
    tracing: TracingConfig = TracingConfig()
