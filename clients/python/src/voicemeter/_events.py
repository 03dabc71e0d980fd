"""What the server tells a call: budget warnings and cutoffs, the summary, refused frames, errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping

from ._amounts import decimal_from_server


@dataclass(frozen=True)
class BudgetWarning:
    """A budget threshold crossed (75 % / 90 % of the call limit, 80 % / 95 % of day and month)."""

    call_id: str
    scope: str
    spent: Decimal
    limit: Decimal
    percent: Decimal

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> BudgetWarning:
        return cls(
            call_id=str(message["call_id"]),
            scope=str(message["scope"]),
            spent=decimal_from_server(message["spent"], "spent"),
            limit=decimal_from_server(message["limit"], "limit"),
            percent=decimal_from_server(message["percent"], "percent"),
        )


@dataclass(frozen=True)
class BudgetCutoff:
    """A limit reached with auto-cutoff on: the pipeline must end the call (usage still counts)."""

    call_id: str
    scope: str
    spent: Decimal
    limit: Decimal

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> BudgetCutoff:
        return cls(
            call_id=str(message["call_id"]),
            scope=str(message["scope"]),
            spent=decimal_from_server(message["spent"], "spent"),
            limit=decimal_from_server(message["limit"], "limit"),
        )


@dataclass(frozen=True)
class CallSummary:
    """The call's cost once all its usage is committed: `margin = revenue - cost - payment_fee`."""

    call_id: str
    cost: Decimal
    by_service: dict[str, Decimal] = field(default_factory=dict)
    revenue: Decimal | None = None
    #: `None` when the server sent none (no revenue, or no payment price in force).
    payment_fee: Decimal | None = None
    margin: Decimal | None = None

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> CallSummary:
        by_service = message.get("by_service") or {}
        revenue = message.get("revenue")
        margin = message.get("margin")
        fee = message.get("payment_fee")
        return cls(
            call_id=str(message["call_id"]),
            cost=decimal_from_server(message["cost"], "cost"),
            by_service={
                str(service): decimal_from_server(cost, f"by_service.{service}")
                for service, cost in by_service.items()
            },
            revenue=None if revenue is None else decimal_from_server(revenue, "revenue"),
            payment_fee=None if fee is None else decimal_from_server(fee, "payment_fee"),
            margin=None if margin is None else decimal_from_server(margin, "margin"),
        )


@dataclass(frozen=True)
class FrameRefused:
    """A usage frame the server refused for good (`invalid_amount`, `invalid_timestamp`,
    `seq_conflict`, `internal`): it was not counted and is not resent."""

    call_id: str
    seq: int
    code: str
    message: str


class VoiceMeterError(Exception):
    """Base of the SDK's errors."""


class CallRejected(VoiceMeterError):
    """`call.start` was answered `call.rejected` (budget exhausted, call ended, duplicate call, …),
    or refused with an `error` (`reason` is then its code, e.g. `invalid_timestamp`, and
    `message` the server's explanation)."""

    def __init__(
        self,
        call_id: str,
        reason: str,
        spent: Decimal | None = None,
        limit: Decimal | None = None,
        message: str | None = None,
    ) -> None:
        detail = f" (spent {spent} of {limit})" if spent is not None and limit is not None else ""
        explained = f": {message}" if message else ""
        super().__init__(f"call {call_id} rejected: {reason}{detail}{explained}")
        self.message = message
        self.call_id = call_id
        self.reason = reason
        self.spent = spent
        self.limit = limit


class AuthenticationFailed(VoiceMeterError):
    """The server refused the connection's token (HTTP 401/403): retrying will not help."""


class CallEnded(VoiceMeterError):
    """Usage for a call that has already ended (locally or on the server)."""


class CallNotSettled(VoiceMeterError):
    """Leaving a call, not every frame was acknowledged, or no summary came, within the bound.

    `unacknowledged` are the seqs the server has not confirmed as committed. The SDK keeps the
    call registered and goes on resending them while the `VoiceMeter` stays open.
    """

    def __init__(self, call_id: str, unacknowledged: list[int], reason: str) -> None:
        shown = ", ".join(str(seq) for seq in unacknowledged[:10])
        more = "…" if len(unacknowledged) > 10 else ""
        super().__init__(
            f"call {call_id} not settled: {reason}; unacknowledged seqs: [{shown}{more}]"
        )
        self.call_id = call_id
        self.unacknowledged = unacknowledged
