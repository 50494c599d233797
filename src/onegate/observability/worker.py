"""What observability keeps per worker process, and the task that flushes it.

Metric objects, log streams and tracer providers belong to the process, not to a
configuration: a reload builds new stages that reuse them, so counters carry on and no
exporter thread is started twice for the same settings. Every 100 ms the housekeeping task
hands counted metrics to prometheus_client, writes queued access-log lines, and updates the
health and breaker gauges of every target; it does all three once more at shutdown.

Why the target gauges are refreshed here rather than at scrape time: a scrape is answered by
one worker, reading the other workers' shared files, so a collector computing the values at
scrape time would only ever see the scraping worker's breakers and health checks. Each worker
therefore writes its own view, and only when it changed (a dict lookup per target); the
gauges' ``livemin``/``livemax`` modes combine the views. Writing them here instead of at the
end of every request keeps them off the hot path, at the price of up to 100 ms of delay.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from typing import Literal

from prometheus_client import CollectorRegistry

from onegate.observability import multiprocess
from onegate.observability.accesslog import AccessLog
from onegate.observability.config import TracingConfig
from onegate.observability.connections import ConnectionStats
from onegate.observability.families import Families
from onegate.observability.healthlog import HealthLog
from onegate.observability.linewriter import LineWriter
from onegate.observability.observed import ObservedUpstream
from onegate.observability.recorder import MetricsRecorder
from onegate.observability.tracing import Tracing

logger = logging.getLogger("onegate.observability")

FLUSH_SECONDS = 0.1

Stream = Literal["stdout", "stderr"]
_STREAM_FDS: dict[Stream, int] = {"stdout": 1, "stderr": 2}


class Worker:
    def __init__(self) -> None:
        self._recorder: MetricsRecorder | None = None
        self._registry: CollectorRegistry | None = None
        self._logs: dict[Stream, AccessLog] = {}
        self._tracings: dict[TracingConfig, Tracing] = {}
        self.connections = ConnectionStats()
        """Client connections: counted by the HTTP protocol, flushed with the metrics."""
        self.health_log = HealthLog()
        """Where upstreams report target health changes (logged once per gateway)."""

    def recorder(self) -> MetricsRecorder:
        if self._recorder is None:
            if multiprocess.directory() is None:
                # Outside ``onegate serve`` (tests, tools): one process, one registry.
                self._registry = CollectorRegistry()
            self._recorder = MetricsRecorder(Families(self._registry))
        return self._recorder

    @property
    def registry(self) -> CollectorRegistry | None:
        """The registry holding this process's metrics when not in multiprocess mode."""
        return self._registry

    def access_log(self, stream: Stream) -> AccessLog:
        log = self._logs.get(stream)
        if log is None:
            log = self._logs[stream] = AccessLog(LineWriter(_STREAM_FDS[stream]))
        return log

    def tracing(self, config: TracingConfig) -> Tracing | None:
        """The tracer for ``config``; None when its exporter is ``none``."""
        if config.exporter == "none":
            return None
        tracing = self._tracings.get(config)
        if tracing is None:
            tracing = self._tracings[config] = Tracing(config)
        return tracing

    def flush_metrics(self) -> None:
        if self._recorder is not None:
            self._recorder.flush()
            self.connections.flush(self._recorder.families)

    def flush(self, upstreams: Iterable[ObservedUpstream] = ()) -> None:
        recorder = self._recorder
        if recorder is not None:
            recorder.refresh_targets(upstreams)
            recorder.flush()
            self.connections.flush(recorder.families)
        for log in self._logs.values():
            log.writer.flush()

    async def housekeeping(self, upstreams: Callable[[], Iterable[ObservedUpstream]]) -> None:
        """Flush every :data:`FLUSH_SECONDS` until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                self.flush(upstreams())
        finally:
            self.flush(upstreams())

    def shutdown(self) -> None:
        """At the end of the worker: flush everything, stop exporters, retire live gauges."""
        self.flush()
        for tracing in self._tracings.values():
            try:
                tracing.shutdown()
            except Exception:
                logger.exception("tracing exporter failed to shut down")
        self._tracings.clear()
        self.health_log.close()
        multiprocess.worker_exited(os.getpid())
