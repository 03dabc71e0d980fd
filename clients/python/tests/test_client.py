"""The core client against a real `voicemeter serve` and PostgreSQL: what is acknowledged is stored
once, summaries equal the ledger, budgets reach the caller, and a server restart loses nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from conftest import VoiceMeterServer
from voicemeter import AuthenticationFailed, BudgetCutoff, BudgetWarning, CallEnded, CallRejected, VoiceMeter


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def stored_events(server: VoiceMeterServer, call_id: str) -> list[tuple[str, ...]]:
    """(seq, service, unit, amount, total_cost) of the call's events, in seq order."""
    return server.sql(
        "SELECT seq, service, usage_unit, usage_amount::text, coalesce(total_cost::text, '') FROM api_call_events"
        f" WHERE call_id = '{call_id}' ORDER BY seq"
    )


async def test_a_call_is_stored_once_and_its_summary_equals_the_ledger(
    voicemeter_server: VoiceMeterServer,
) -> None:
    vm = VoiceMeter(url=voicemeter_server.url, token=voicemeter_server.token)
    call_id, user = new_id("CA"), new_id("user")
    async with vm.call(call_id=call_id, user_id=user, revenue="4.99") as call:
        assert await call.usage("twilio", "voice_outbound", "seconds", 30) == 1
        await call.usage("deepgram", "stt_streaming", "seconds", 12.3456, model="nova-2")
        await call.usage("elevenlabs", "tts_generation", "characters", 410, model="eleven_turbo_v2_5")
        await call.usage("twilio", "voice_outbound", "seconds", "30")
    await vm.close()

    assert call.unacknowledged == []
    rows = stored_events(voicemeter_server, call_id)
    assert [(seq, service, unit, Decimal(amount)) for seq, service, unit, amount, _ in rows] == [
        ("1", "twilio", "seconds", Decimal(30)),
        ("2", "deepgram", "seconds", Decimal("12.346")),
        ("3", "elevenlabs", "characters", Decimal(410)),
        ("4", "twilio", "seconds", Decimal(30)),
    ]
    summary = call.summary
    assert summary is not None
    assert summary.cost == sum(Decimal(cost) for *_, cost in rows)
    # Twilio bills whole minutes per call: 60 s at $0.014 a minute.
    assert summary.by_service["twilio"] == Decimal("0.014")
    assert summary.revenue == Decimal("4.99")
    assert summary.payment_fee is not None and summary.revenue is not None
    assert summary.margin == summary.revenue - summary.cost - summary.payment_fee


@pytest.mark.parametrize("stop", ["stop", "kill"])
async def test_a_server_restart_mid_call_loses_and_doubles_nothing(
    voicemeter_server: VoiceMeterServer, stop: str
) -> None:
    vm = VoiceMeter(url=voicemeter_server.url, token=voicemeter_server.token, reconnect_delay_max=0.5)
    call_id = new_id(f"CA-{stop}")
    call = await vm.start_call(call_id=call_id, user_id=new_id("user"))
    for _ in range(200):
        await call.usage("deepgram", "stt_streaming", "seconds", "0.5", model="nova-2")
    # stop (SIGTERM): what the server took is committed and acknowledged, then it closes with
    # 1001. kill (SIGKILL), with frames still on their way: whatever was not committed is lost
    # with the process and never acknowledged. Either way the client keeps what no ack covers,
    # and the frames below while the server is down, and sends them after reconnecting.
    await asyncio.to_thread(getattr(voicemeter_server, stop))
    for _ in range(50):
        await call.usage("deepgram", "stt_streaming", "seconds", "0.5", model="nova-2")
    assert len(call.unacknowledged) >= 50
    await asyncio.to_thread(voicemeter_server.start)
    summary = await call.end()
    await vm.close()

    assert vm.connections_made >= 2
    rows = stored_events(voicemeter_server, call_id)
    assert [int(seq) for seq, *_ in rows] == list(range(1, 251))
    assert sum(Decimal(amount) for _, _, _, amount, _ in rows) == Decimal(125)
    assert summary is not None and summary.cost == sum(Decimal(cost) for *_, cost in rows)


async def test_usage_waits_while_the_buffer_of_unacknowledged_frames_is_full(
    voicemeter_server: VoiceMeterServer,
) -> None:
    vm = VoiceMeter(
        url=voicemeter_server.url, token=voicemeter_server.token, buffer_frames=2, reconnect_delay_max=0.5
    )
    call_id = new_id("CA-buffer")
    call = await vm.start_call(call_id=call_id, user_id=new_id("user"))
    await asyncio.to_thread(voicemeter_server.stop)  # no ack can come while it is down
    await call.usage("requests_service", "lookup", "requests", 1)
    await call.usage("requests_service", "lookup", "requests", 1)
    third = asyncio.create_task(call.usage("requests_service", "lookup", "requests", 1))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not third.done()
    await asyncio.to_thread(voicemeter_server.start)
    assert await third == 3
    await call.end()
    await vm.close()
    assert [row[0] for row in stored_events(voicemeter_server, call_id)] == ["1", "2", "3"]


async def test_warnings_and_the_cutoff_reach_callbacks_and_events(
    voicemeter_server: VoiceMeterServer,
) -> None:
    user = new_id("user")
    voicemeter_server.set_budget(user, call_limit="0.05")
    vm = VoiceMeter(url=voicemeter_server.url, token=voicemeter_server.token)
    cutoffs: list[BudgetCutoff] = []
    warnings: list[BudgetWarning] = []
    async with vm.call(call_id=new_id("CA-cutoff"), user_id=user) as call:
        call.on_cutoff(cutoffs.append)
        call.on_warning(warnings.append)
        events = call.events()
        # $0.014 a minute of outbound Twilio: the 4th minute crosses the $0.05 limit.
        for _ in range(4):
            await call.usage("twilio", "voice_outbound", "seconds", 60)
        seen = [await anext(events) for _ in range(3)]
        await events.aclose()
    await vm.close()

    assert seen == [*warnings, call.cutoff]
    assert call.cutoff is not None and call.cutoff.scope == "call"
    assert cutoffs == [call.cutoff]
    # 3 minutes ($0.042, 84 %) cross 75 %; the 4th ($0.056) crosses 90 % and the limit at once.
    assert [(warning.spent, warning.percent) for warning in warnings] == [
        (Decimal("0.042"), Decimal(84)),
        (Decimal("0.056"), Decimal(112)),
    ]
    assert call.summary is not None and call.summary.cost == Decimal("0.056")


async def test_a_refused_start_raises_with_the_servers_reason(voicemeter_server: VoiceMeterServer) -> None:
    user = new_id("user")
    voicemeter_server.set_budget(user, month_limit="0")
    vm = VoiceMeter(url=voicemeter_server.url, token=voicemeter_server.token)
    with pytest.raises(CallRejected) as rejected:
        await vm.start_call(call_id=new_id("CA-rejected"), user_id=user)
    await vm.close()
    assert rejected.value.reason == "month_budget_exhausted"
    assert rejected.value.limit == Decimal(0)


async def test_a_frame_refused_for_good_is_reported_and_does_not_hold_the_call(
    voicemeter_server: VoiceMeterServer,
) -> None:
    vm = VoiceMeter(url=voicemeter_server.url, token=voicemeter_server.token)
    call_id = new_id("CA-refused")
    async with vm.call(call_id=call_id, user_id=new_id("user")) as call:
        await call.usage("deepgram", "stt_streaming", "seconds", 1, model="nova-2")
        tomorrow = datetime.now(timezone.utc) + timedelta(days=1)
        await call.usage("deepgram", "stt_streaming", "seconds", 1, model="nova-2", ts=tomorrow)
        await call.usage("deepgram", "stt_streaming", "seconds", 1, model="nova-2")
    await vm.close()

    assert [(refused.seq, refused.code) for refused in call.refused] == [(2, "invalid_timestamp")]
    assert [row[0] for row in stored_events(voicemeter_server, call_id)] == ["1", "3"]


async def test_an_unknown_token_fails_at_once(voicemeter_server: VoiceMeterServer) -> None:
    vm = VoiceMeter(url=voicemeter_server.url, token="vmi_not-a-token")
    with pytest.raises(AuthenticationFailed, match="401"):
        await vm.start_call(call_id=new_id("CA-token"), user_id="u1")
    await vm.close()


async def test_a_frame_the_server_would_refuse_is_refused_before_it_takes_a_seq(
    voicemeter_server: VoiceMeterServer,
) -> None:
    vm = VoiceMeter(url=voicemeter_server.url, token=voicemeter_server.token)
    call_id = new_id("CA-checked")
    async with vm.call(call_id=call_id, user_id=new_id("user")) as call:
        with pytest.raises(ValueError, match="at most 100"):
            await call.usage("bedrock", "chat_completion", "input_tokens", 10, model="m" * 101)
        with pytest.raises(ValueError, match="metadata must be JSON"):
            await call.usage("x", "op", "requests", 1, metadata={"ratio": float("nan")})
        with pytest.raises(ValueError, match="RFC 3339"):
            await call.usage("x", "op", "requests", 1, ts="yesterday")
        assert await call.usage("x", "op", "requests", 1) == 1
    await vm.close()
    # The refused ones took no seq, so nothing holds the call's acks.
    assert [row[0] for row in stored_events(voicemeter_server, call_id)] == ["1"]


async def test_ending_while_disconnected_sends_every_kept_frame_before_the_end(
    voicemeter_server: VoiceMeterServer,
) -> None:
    vm = VoiceMeter(
        url=voicemeter_server.url, token=voicemeter_server.token, buffer_frames=3, reconnect_delay_max=0.5
    )
    call_id = new_id("CA-ending")
    call = await vm.start_call(call_id=call_id, user_id=new_id("user"))
    await asyncio.to_thread(voicemeter_server.stop)
    for _ in range(3):
        await call.usage("deepgram", "stt_streaming", "seconds", 1, model="nova-2")
    waiting = asyncio.create_task(call.usage("deepgram", "stt_streaming", "seconds", 1, model="nova-2"))
    ending = asyncio.create_task(call.end())
    await asyncio.to_thread(voicemeter_server.start)
    summary = await ending
    # The frame that waited for room in the buffer came after call.end: it is refused, not lost.
    with pytest.raises(CallEnded):
        await waiting
    await vm.close()
    assert [row[0] for row in stored_events(voicemeter_server, call_id)] == ["1", "2", "3"]
    assert summary is not None and summary.by_service == {"deepgram": Decimal("0.000295")}
