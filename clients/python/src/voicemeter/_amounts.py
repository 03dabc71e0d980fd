"""Exact numbers for the wire: amounts, money and timestamps, never through binary floating point."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

#: The units the server prices (protocol v1).
UNITS = frozenset(
    {
        "seconds",
        "minutes",
        "tokens",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "characters",
        "requests",
        "transactions",
    }
)

#: A float number of seconds is rounded to whole milliseconds; of minutes, to the same instant
#: (a millisecond is 1/60000 minute, so minutes keep 5 decimal places: 0.6 ms).
_FLOAT_QUANTUM = {"seconds": Decimal("0.001"), "minutes": Decimal("0.00001")}

#: The server's bounds on an amount: at most 9 decimal places, at most 10^12.
_AMOUNT_PLACES_MAX = 9
_AMOUNT_MAX = Decimal(10) ** 12
_AMOUNT_QUANTUM = Decimal(10) ** -_AMOUNT_PLACES_MAX

#: The server's bounds on revenue: at most 4 decimal places, below 10^10.
_REVENUE_PLACES_MAX = 4
_REVENUE_BOUND = Decimal(10) ** 10

Amount = Decimal | int | str | float
Money = Decimal | int | str


def usage_amount(amount: Amount, unit: str) -> str:
    """The amount as the decimal string sent to the server.

    `Decimal`, `int` and decimal strings are sent exactly. A `float` (what frameworks report for
    durations) is rounded half-even to milliseconds for `seconds` (5 places for `minutes`), so
    binary noise like 2.0000000000000004 never reaches the ledger (the float's shortest repr is
    rounded, so 2.0005 gives 2.000 and 2.0015 gives 2.002); a float for a counted unit
    (tokens, characters, …) must be whole. Raises `ValueError` for a negative, non-finite, too
    precise or too large amount, and for an unknown unit.
    """
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; use one of: {', '.join(sorted(UNITS))}")
    if isinstance(amount, bool):
        raise TypeError("amount must be a Decimal, int, str or float, not bool")
    if isinstance(amount, float):
        if not math.isfinite(amount):
            raise ValueError(f"amount must be finite, got {amount!r}")
        quantum = _FLOAT_QUANTUM.get(unit)
        if quantum is None:
            if not amount.is_integer():
                raise ValueError(f"a {unit} amount must be whole, got {amount!r}")
            value = Decimal(int(amount))
        else:
            value = Decimal(repr(amount)).quantize(quantum, rounding=ROUND_HALF_EVEN)
    else:
        value = _decimal(amount, "amount")
    if value.is_zero():
        value = Decimal(0)  # "-0" and "0E-12" are zero
    if value < 0:
        raise ValueError(f"amount must not be negative, got {value}")
    if value > _AMOUNT_MAX:
        raise ValueError(f"amount {value} is over the server's bound of 10^12")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > _AMOUNT_PLACES_MAX:
        shortened = value.quantize(_AMOUNT_QUANTUM)
        if shortened != value:
            raise ValueError(f"amount {value} has more than {_AMOUNT_PLACES_MAX} decimal places")
        value = shortened  # trailing zeros only: 1.0000000000 is 1.000000000
    return _plain(value)


def money(value: Money, what: str) -> str:
    """A sum of money (revenue) as the decimal string sent to the server: at least 0, below
    10^10, at most 4 decimal places. Floats are refused."""
    if isinstance(value, (float, bool)):
        raise TypeError(f"{what} must be a Decimal, int or str, never a float: money is exact")
    decimal = _decimal(value, what)
    if decimal < 0 or decimal >= _REVENUE_BOUND:
        raise ValueError(f"{what} must be at least 0 and below 10^10, got {decimal}")
    exponent = decimal.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > _REVENUE_PLACES_MAX:
        shortened = decimal.quantize(Decimal(10) ** -_REVENUE_PLACES_MAX)
        if shortened != decimal:
            raise ValueError(f"{what} {decimal} has more than {_REVENUE_PLACES_MAX} decimal places")
        decimal = shortened
    return _plain(decimal)


def decimal_from_server(value: object, what: str) -> Decimal:
    """A decimal the server sent (always a string in protocol v1)."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ValueError(f"{what} from the server is not a decimal: {value!r}")
    return _decimal(value, what)


def timestamp(ts: datetime | str | None) -> str:
    """RFC 3339 in UTC with microseconds; `None` is now. Naive datetimes, and strings that are
    not RFC 3339 with an offset or `Z`, are refused."""
    if ts is None:
        ts = datetime.now(timezone.utc)
    if isinstance(ts, str):
        try:
            ts = datetime.fromisoformat(ts)
        except ValueError:
            raise ValueError(f"ts must be RFC 3339 like 2026-11-22T18:00:30Z, got {ts!r}") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("ts must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _decimal(value: Decimal | int | str, what: str) -> Decimal:
    try:
        decimal = value if isinstance(value, Decimal) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{what} must be a decimal, got {value!r}") from None
    if not decimal.is_finite():
        raise ValueError(f"{what} must be finite, got {value!r}")
    return decimal


def _plain(value: Decimal) -> str:
    """Positional notation (no exponent), which the server's parser reads exactly."""
    return format(value, "f")


def text_field(value: str | None, what: str, *, longest: int, required: bool = True) -> None:
    """Checks a text field against the server's bounds (protocol v1): present when required,
    at most `longest` characters, no control characters. Raises `ValueError` naming it."""
    if value is None:
        if required:
            raise ValueError(f"{what} is required")
        return
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if required and not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > longest:
        raise ValueError(f"{what} has {len(value)} characters; the server takes at most {longest}")
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in value):
        raise ValueError(f"{what} must not contain control characters")
