"""Cross-origin resource sharing, decided at the edge."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from onegate.model import Model


class CorsPolicy(Model):
    allow_origins: list[str] = Field(min_length=1)
    """Exact origins (``https://app.example.com``) or ``*`` (never with credentials)."""
    allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    )
    allow_headers: list[str] = Field(default_factory=lambda: ["authorization", "content-type"])
    expose_headers: list[str] = Field(default_factory=lambda: ["x-request-id"])
    allow_credentials: bool = False
    max_age_seconds: Annotated[int, Field(ge=0, le=86400)] = 600
