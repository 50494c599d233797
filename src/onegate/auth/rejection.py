"""Why a credential was turned down, before the stage phrases it as an HTTP answer."""

from __future__ import annotations


class Rejected(Exception):
    """A credential that does not authenticate anyone.

    ``reason`` is one short word for metrics (``expired``, ``bad_signature``...); ``detail`` is
    safe to show the client and to log: it never contains the credential itself.
    """

    def __init__(self, reason: str, detail: str, *, error: str = "invalid_token") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.error = error
        """The RFC 6750 error code for the challenge: ``invalid_token`` or ``invalid_request``."""
