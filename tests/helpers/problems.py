"""One check for the gateway's problem documents (RFC 9457), on any response the tests read."""

from __future__ import annotations

import json
from typing import Any

import httpx

from helpers.upstreams import RawResponse

PROBLEM = "application/problem+json"
TYPE_BASE = "https://onegate.dev/problems/"


def assert_problem(
    response: httpx.Response | RawResponse,
    status: int,
    slug: str | None = None,
    *,
    detail: bool = True,
) -> dict[str, Any]:
    """The response's problem document, checked against RFC 9457 and onegate's conventions:
    the status (answered and in the document), the media type, a ``type`` under onegate's base
    (``slug`` if given), a title, a detail (RFC 9457 makes it optional: ``detail=False`` for
    the documents that carry none) and the ``request_id`` the response carries."""
    if isinstance(response, RawResponse):
        answered, body = response.status, response.body
        content_type, request_id = response.header("content-type"), response.header("x-request-id")
    else:
        answered, body = response.status_code, response.content
        content_type = response.headers.get("content-type")
        request_id = response.headers.get("x-request-id")
    assert answered == status, body[:500]
    assert content_type == PROBLEM
    document: dict[str, Any] = json.loads(body)
    assert document["status"] == status
    assert document["type"].startswith(TYPE_BASE), document["type"]
    if slug is not None:
        assert document["type"] == TYPE_BASE + slug
    assert isinstance(document["title"], str) and document["title"]
    if detail:
        assert isinstance(document["detail"], str) and document["detail"]
    assert request_id and document["request_id"] == request_id
    return document
