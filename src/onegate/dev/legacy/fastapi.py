"""The FastAPI stand-in (port 8001): Stripe-shaped payment intents and a tiny ML model."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from onegate.dev.legacy.shared import (
    Unprocessable,
    build,
    digest_of,
    echo_and_slow,
    health_endpoint,
    is_int,
    is_number,
    json_object,
    root_endpoint,
    validation_error,
)

_MAX_INTENTS = 10_000


def _intent_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    errors = []
    if "amount" not in body:
        errors.append(validation_error("missing", ["amount"], "Field required", body))
    elif not is_int(body["amount"]):
        msg = "Input should be a valid integer"
        errors.append(validation_error("int_type", ["amount"], msg, body["amount"]))
    elif body["amount"] <= 0:
        msg = "Input should be greater than 0"
        errors.append(validation_error("greater_than", ["amount"], msg, body["amount"]))
    if "currency" not in body:
        errors.append(validation_error("missing", ["currency"], "Field required", body))
    elif not isinstance(body["currency"], str):
        msg = "Input should be a valid string"
        errors.append(validation_error("string_type", ["currency"], msg, body["currency"]))
    elif not (len(body["currency"]) == 3 and body["currency"].isalpha()):
        msg = "String should match pattern '^[a-zA-Z]{3}$'"
        errors.append(
            validation_error("string_pattern_mismatch", ["currency"], msg, body["currency"])
        )
    return errors


async def _create_intent(request: Request) -> Response:
    body = await json_object(request)
    if errors := _intent_errors(body):
        raise Unprocessable(errors)
    fields = {
        "amount": body["amount"],
        "currency": body["currency"].lower(),
        "metadata": body.get("metadata") or {},
    }
    # The id derives from the body, so tests can predict it and a replayed POST is idempotent.
    digest = digest_of(json.dumps(fields, sort_keys=True).encode())
    intent_id = "pi_" + digest[:24]
    intents: dict[str, dict[str, Any]] = request.app.state.intents
    if intent_id not in intents:
        if len(intents) >= _MAX_INTENTS:
            del intents[next(iter(intents))]  # oldest first: memory stays bounded under load
        intents[intent_id] = {
            "id": intent_id,
            "object": "payment_intent",
            **fields,
            "amount_received": 0,
            "client_secret": f"{intent_id}_secret_{digest[24:48]}",
            "created": int(time.time()),
            "livemode": False,
            "payment_method_types": ["card"],
            "status": "requires_payment_method",
        }
    return JSONResponse(intents[intent_id])


async def _get_intent(request: Request) -> Response:
    intent_id = request.path_params["intent_id"]
    intent = request.app.state.intents.get(intent_id)
    if intent is None:
        raise HTTPException(404, f"No such payment_intent: '{intent_id}'")
    return JSONResponse(intent)


async def _predict(request: Request) -> Response:
    body = await json_object(request)
    inputs = body.get("inputs")
    if "inputs" not in body:
        raise Unprocessable([validation_error("missing", ["inputs"], "Field required", body)])
    if not isinstance(inputs, list):
        raise Unprocessable(
            [validation_error("list_type", ["inputs"], "Input should be a valid list", inputs)]
        )
    if not inputs:
        msg = "List should have at least 1 item after validation, not 0"
        raise Unprocessable([validation_error("too_short", ["inputs"], msg, inputs)])
    errors = [
        validation_error("float_type", ["inputs", i], "Input should be a valid number", value)
        for i, value in enumerate(inputs)
        if not is_number(value)
    ]
    if errors:
        raise Unprocessable(errors)
    total = float(sum(inputs))
    return JSONResponse({"outputs": [total, total / len(inputs)], "model": "sum-mean-v1"})


fastapi_app = build(
    "fastapi",
    [
        Route("/", root_endpoint("FastAPI payments and ML service", "/health")),
        Route("/health", health_endpoint()),
        Route("/api/payments/health", health_endpoint("payments")),
        Route("/api/payments/intents", _create_intent, methods=["POST"]),
        Route("/api/payments/intents/{intent_id}", _get_intent),
        *echo_and_slow("/api/payments"),
        Route("/api/ml/health", health_endpoint("ml")),
        Route("/api/ml/predict", _predict, methods=["POST"]),
        *echo_and_slow("/api/ml"),
    ],
    {},
)
"""The FastAPI stand-in (port 8001)."""
fastapi_app.state.intents = {}
