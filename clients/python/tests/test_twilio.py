"""Twilio's status callback becomes the call's telephony usage, billed in whole minutes as Twilio does."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from conftest import VoiceMeterServer
from voicemeter import VoiceMeter
from voicemeter.twilio import TwilioDurations, telephony_usage


def callback(call_sid: str, status: str = "completed", duration: str = "301", direction: str = "outbound-api") -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "CallStatus": status,
        "CallDuration": duration,
        "Direction": direction,
        "Timestamp": "Mon, 07 Dec 2026 12:05:01 +0000",
    }


def test_a_completed_callback_is_its_whole_duration() -> None:
    usage = telephony_usage(callback("CA1", direction="inbound"))
    assert usage is not None
    assert (usage.operation, usage.seconds) == ("voice_inbound", 301)
    assert usage.ended_at == datetime(2026, 12, 7, 12, 5, 1, tzinfo=timezone.utc)


def test_a_call_never_connected_bills_nothing() -> None:
    assert telephony_usage(callback("CA1", status="no-answer", duration="0")) is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("CallDuration", "12.5", "whole seconds"), ("Direction", "sideways", "unknown Direction"), ("CallSid", "", "no CallSid")],
)
def test_a_malformed_callback_names_its_field(field: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        telephony_usage({**callback("CA1"), field: value})


async def test_the_callback_is_billed_in_whole_minutes_whichever_comes_first(
    voicemeter_server: VoiceMeterServer,
) -> None:
    durations = TwilioDurations()
    vm = VoiceMeter(url=voicemeter_server.url, token=voicemeter_server.token)
    now = datetime.now(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S +0000")
    early, late = f"CA-tw-{uuid.uuid4().hex[:10]}", f"CA-tw-{uuid.uuid4().hex[:10]}"
    durations.deliver({**callback(early), "Timestamp": now})  # before the call waits for it
    async with vm.call(call_id=early, user_id="tw-user") as first:
        assert await durations.record(first) is not None
    async with vm.call(call_id=late, user_id="tw-user") as second:
        waiting = asyncio.create_task(durations.record(second))
        await asyncio.sleep(0)
        assert not waiting.done()  # it waits for the callback
        durations.deliver({**callback(late, duration="59", direction="inbound"), "Timestamp": now})
        await waiting
    await vm.close()

    # 301 s outbound: 6 minutes at $0.014; 59 s inbound: 1 minute at $0.0085.
    assert first.summary is not None and first.summary.by_service == {"twilio": Decimal("0.084")}
    assert second.summary is not None and second.summary.by_service == {"twilio": Decimal("0.0085")}


async def test_streamed_telephony_and_twilios_duration_are_never_both_billed(
    voicemeter_server: VoiceMeterServer,
) -> None:
    vm = VoiceMeter(url=voicemeter_server.url, token=voicemeter_server.token)
    async with vm.call(call_id=f"CA-tw-{uuid.uuid4().hex[:10]}", user_id="tw-user") as call:
        await call.usage("twilio", "voice_outbound", "seconds", 30)
        with pytest.raises(ValueError, match="never both"):
            await TwilioDurations().record(call)
    await vm.close()
