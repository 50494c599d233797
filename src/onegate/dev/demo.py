"""The built-in demo upstream: answers with what it received, as the gateway forwarded it.

Served in process by the default configuration, so a newcomer sees the gateway's work (the
request id, X-Forwarded-*, Forwarded) with nothing else running.
"""

from __future__ import annotations

import json

from onegate.types import Receive, Scope, Send


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    document = {
        "message": "Hello from onegate's built-in demo upstream.",
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode("latin-1"),
        "body_bytes": size,
        "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
    }
    body = json.dumps(document, indent=2).encode() + b"\n"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
