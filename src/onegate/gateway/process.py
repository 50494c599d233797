"""What lives as long as the worker process, across every reload of the configuration.

A reload builds new stages, but some things must carry over: metric objects and log
streams (counters carry on, no exporter thread starts twice), rate-limit stores (a daily limit
must not start over on each configuration change), the assertion signing keys, and the
request-id sequence. They are kept on one explicit object, owned by the gateway app and handed
to each new pipeline, instead of in module globals: nothing couples two gateways in one
process (tests build as many as they like), and in-process services will keep their database
engines and model handles here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onegate.auth.assertion import SigningKeys
from onegate.gateway.headers import RequestIds
from onegate.observability.worker import Worker
from onegate.ratelimit.stores import Stores


@dataclass(frozen=True, eq=False)
class ProcessState:
    observability: Worker = field(default_factory=Worker)
    """Metric objects, access-log streams and tracers of this process."""
    rate_limit_stores: Stores = field(default_factory=Stores)
    """Rate-limit stores, shared by the pipelines that name the same settings."""
    signing_keys: SigningKeys = field(default_factory=SigningKeys)
    """Keys the identity assertion is signed with."""
    request_ids: RequestIds = field(default_factory=RequestIds)
    """Where fresh ``X-Request-ID`` values come from."""
