"""What every access-log line must look like, as documented in docs/observability.md."""

from __future__ import annotations

import re

KEYS = [
    "ts",
    "request_id",
    "method",
    "path",
    "route",
    "upstream",
    "target",
    "status",
    "duration_ms",
    "bytes",
    "principal",
    "client_ip",
    "attempts",
    "error",
]
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
