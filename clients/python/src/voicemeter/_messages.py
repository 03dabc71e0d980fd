"""The client's messages as the server takes them: `call.start` and `usage`, checked against the
server's bounds before they are sent (`ValueError` names the field)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TypedDict

from ._amounts import Amount, Money, money, text_field, timestamp, usage_amount

#: Metadata the server stores per frame, serialised, at most (protocol v1).
METADATA_BYTES_MAX = 8 * 1024


class CallDetails(TypedDict, total=False):
    """A call's optional `call.start` fields: what the caller paid (`revenue`, exact; with its
    `currency`, default USD, and `payment_method`, default card, which select the payment fee),
    the `persona_id`, and when it started (`ts`, default now)."""

    revenue: Money
    currency: str
    payment_method: str
    persona_id: str
    ts: datetime | str


def start_message(call_id: str, user_id: str, details: CallDetails) -> str:
    """`call.start`, checked against the server's bounds (`ValueError` names the field)."""
    text_field(call_id, "call_id", longest=100)
    text_field(user_id, "user_id", longest=255)
    text_field(details.get("persona_id"), "persona_id", longest=50, required=False)
    text_field(details.get("payment_method"), "payment_method", longest=50, required=False)
    currency = details.get("currency")
    if currency is not None and not (len(currency) == 3 and currency.isascii() and currency.isupper()):
        raise ValueError(f"currency must be three capital letters like USD, got {currency!r}")
    start: dict[str, Any] = {"type": "call.start", "call_id": call_id, "user_id": user_id, "ts": timestamp(details.get("ts"))}
    if "revenue" in details:
        start["revenue"] = money(details["revenue"], "revenue")
    for key in ("currency", "payment_method", "persona_id"):
        if key in details:
            start[key] = details[key]
    return json.dumps(start)


def usage_message(
    call_id: str,
    service: str,
    operation: str,
    unit: str,
    amount: Amount,
    model: str | None,
    ts: datetime | str | None,
    external_id: str | None,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    """A usage message of `call_id` (its seq still 0), checked against the server's bounds before
    it takes a seq (a seq the server refuses at decoding would stop the call's acks at it)."""
    text_field(service, "service", longest=50)
    text_field(operation, "operation", longest=100)
    text_field(model, "model", longest=100, required=False)
    text_field(external_id, "external_id", longest=200, required=False)
    frame: dict[str, Any] = {
        "type": "usage",
        "call_id": call_id,
        "seq": 0,
        "ts": timestamp(ts),
        "service": service,
        "operation": operation,
        "amount": usage_amount(amount, unit),
        "unit": unit,
    }
    if model is not None:
        frame["model"] = model
    if external_id is not None:
        frame["external_id"] = external_id
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise TypeError("metadata must be a dict (a JSON object)")
        try:
            encoded = json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"metadata must be JSON (str, int, bool, None, lists, dicts; no NaN): {error}") from None
        if len(encoded.encode()) > METADATA_BYTES_MAX or "\\u0000" in encoded:
            raise ValueError("metadata must be at most 8 KiB of JSON without NUL characters")
        frame["metadata"] = metadata
    return frame
