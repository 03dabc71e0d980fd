"""Amounts and money reach the wire exactly; floats are rounded as documented, never passed raw."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from voicemeter._amounts import money, timestamp, usage_amount


def test_exact_forms_are_sent_as_given() -> None:
    assert usage_amount(9747, "input_tokens") == "9747"
    assert usage_amount(Decimal("0.000000001"), "seconds") == "0.000000001"
    assert usage_amount("12.5", "characters") == "12.5"
    assert usage_amount(Decimal("1E+3"), "tokens") == "1000"


def test_float_seconds_are_rounded_to_milliseconds() -> None:
    # 0.1 + 0.2 is 0.30000000000000004 in binary: the noise must not reach the ledger.
    assert usage_amount(0.1 + 0.2, "seconds") == "0.300"
    assert usage_amount(2.0005, "seconds") == "2.000"  # half to even, from the shortest repr
    assert usage_amount(1.2346, "seconds") == "1.235"
    assert usage_amount(0.5, "minutes") == "0.50000"


def test_float_counts_must_be_whole() -> None:
    assert usage_amount(412.0, "output_tokens") == "412"
    with pytest.raises(ValueError, match="whole"):
        usage_amount(41.5, "characters")


@pytest.mark.parametrize(
    ("amount", "unit", "message"),
    [
        (-1, "tokens", "negative"),
        (float("nan"), "seconds", "finite"),
        ("abc", "tokens", "decimal"),
        (Decimal("0.0000000001"), "seconds", "decimal places"),
        (10**13, "tokens", "10\\^12"),
        (1, "hours", "unknown unit"),
    ],
)
def test_bad_amounts_are_refused_before_sending(amount: object, unit: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        usage_amount(amount, unit)  # type: ignore[arg-type]


def test_money_refuses_floats() -> None:
    assert money("4.99", "revenue") == "4.99"
    assert money(Decimal("0.30"), "revenue") == "0.30"
    with pytest.raises(TypeError, match="never a float"):
        money(4.99, "revenue")  # type: ignore[arg-type]


def test_timestamps_are_utc_and_aware() -> None:
    moment = datetime(2026, 11, 22, 19, 0, 30, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert timestamp(moment) == "2026-11-22T18:00:30.123456Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        timestamp(datetime(2026, 11, 22, 18, 0, 30))
