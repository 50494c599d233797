"""Why the admin surface refused a request (each one an RFC 9457 problem document)."""

from __future__ import annotations

from onegate.errors import OnegateError


class AdminCredentialRequired(OnegateError):
    """No credential at all. The auth stage normally answers first; this is the backstop."""

    status = 401
    slug = "admin-credential-required"
    title = "Admin credential required"

    def __init__(self) -> None:
        super().__init__(
            "Send an API key or a JWT carrying the admin scope",
            headers={"www-authenticate": 'Bearer realm="onegate"'},
        )


class AdminForbidden(OnegateError):
    status = 403
    slug = "admin-scope-required"
    title = "Admin scope required"


class AdminDisabled(OnegateError):
    """No issuer is configured, so no caller can ever prove to be an admin."""

    status = 403
    slug = "admin-disabled"
    title = "Admin surface disabled"

    def __init__(self) -> None:
        super().__init__(
            "The admin surface needs an admin credential, and no issuer is configured "
            "under 'auth.issuers'"
        )
