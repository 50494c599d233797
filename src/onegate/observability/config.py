"""Configuration of metrics, the access log and tracing."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from onegate.model import Model


class MetricsConfig(Model):
    enabled: bool = True
    path: str = "/metrics"
    """Served without credentials to loopback peers only; others need the admin scope."""


class AccessLogConfig(Model):
    enabled: bool = True
    stream: Literal["stdout", "stderr"] = "stdout"


class TracingConfig(Model):
    exporter: Literal["none", "console", "otlp"] = "none"
    endpoint: str | None = None
    """OTLP/HTTP traces endpoint, e.g. ``http://collector:4318/v1/traces``."""
    service_name: str = "onegate"
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0


class ObservabilityConfig(Model):
    metrics: MetricsConfig = MetricsConfig()
    access_log: AccessLogConfig = AccessLogConfig()
    tracing: TracingConfig = TracingConfig()
