"""The base of every configuration object (kept apart so each package can define its own)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Seconds = Annotated[float, Field(gt=0)]

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def _check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError("use letters, digits, '-' and '_', starting with a letter")
    return name


def _check_network(cidr: str) -> str:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise ValueError(f"{cidr!r} is not an IP network") from exc
    return cidr


Name = Annotated[str, AfterValidator(_check_name)]
"""A name used in keys, logs and metrics: letters, digits, ``-`` and ``_``."""
Network = Annotated[str, AfterValidator(_check_network)]
"""An IP network in CIDR notation (a bare address is a network of one)."""


class Model(BaseModel):
    """Base of every config object: unknown keys are errors, objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
