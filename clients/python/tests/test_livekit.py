"""The LiveKit Agents integration: a real `AgentSession` (Deepgram STT, OpenAI LLM, OpenAI TTS, no
room: a scripted microphone and an instant loudspeaker) talking to loopback stand-ins of the
providers, metered by `voicemeter.livekit.attach` into a real `voicemeter serve`. The ledger must
equal what the stand-ins billed by their own logs, each report once even when LiveKit delivers it
twice; a budget cutoff must end the session. The mapping alone: test_livekit_usage.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from livekit.agents import Agent, AgentSession, CloseEvent, MetricsCollectedEvent
from livekit.agents.metrics import STTMetrics
from livekit.plugins import deepgram, openai

from conftest import VoiceMeterServer
from livekit_helpers import (
    LLM_MODEL,
    STT_MODEL,
    TTS_MODEL,
    PlaybackSink,
    ScriptedAudioInput,
    llm_metrics,
    stt_metrics,
    utterance,
    vad_metrics,
)
from standins import DeepgramStandin, OpenAIStandin, TTSStandin
from standins.livekit_extras import TokenSpeechStandin
from voicemeter import VoiceMeter
from voicemeter.livekit import attach

#: OpenAI's token-billed TTS (its speech comes as SSE with the usage at the end).
TOKEN_TTS_MODEL = "gpt-4o-mini-tts"
#: The cutoff test's LLM, priced so that its first completion alone crosses CALL_LIMIT.
DEAR_LLM_MODEL, CALL_LIMIT = "gpt-4.1-lk-dear", "0.001"
INSTRUCTIONS = "You are a helpful and concise voice assistant. Answer in one short sentence."
STEP_TIMEOUT = 20.0

Row = tuple[str, str, str, str, Decimal]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def priced(voicemeter_server: VoiceMeterServer) -> VoiceMeterServer:
    """Prices in force for the models the session uses (DEAR_LLM_MODEL's 100 times OpenAI's)."""
    server = voicemeter_server
    server.set_price("openai", "chat_completion", "input_tokens", "0.00005", model=DEAR_LLM_MODEL)
    server.set_price("openai", "chat_completion", "output_tokens", "0.0002", model=DEAR_LLM_MODEL)
    server.set_price("openai", "chat_completion", "input_tokens", "0.0000004", model=LLM_MODEL)
    server.set_price("openai", "chat_completion", "cached_input_tokens", "0.0000001", model=LLM_MODEL)
    server.set_price("openai", "chat_completion", "output_tokens", "0.0000016", model=LLM_MODEL)
    server.set_price("deepgram", "stt_streaming", "minutes", "0.0077", model=STT_MODEL)
    server.set_price("openai", "tts_generation", "characters", "0.000015", model=TTS_MODEL)
    server.set_price("openai", "tts_generation", "input_tokens", "0.0000006", model=TOKEN_TTS_MODEL)
    server.set_price("openai", "tts_generation", "output_tokens", "0.000012", model=TOKEN_TTS_MODEL)
    return server


@dataclass
class Providers:
    openai: OpenAIStandin
    deepgram: DeepgramStandin
    tts: TTSStandin
    http: aiohttp.ClientSession


@pytest.fixture
async def providers() -> AsyncIterator[Providers]:
    async with (
        OpenAIStandin(replies=["Sure, it is sunny today.", "You are welcome, goodbye!"]) as openai_standin,
        DeepgramStandin(transcripts=["What is the weather like today?", "Thank you very much."]) as dg,
        TTSStandin() as tts,
        aiohttp.ClientSession() as http,
    ):
        yield Providers(openai_standin, dg, tts, http)


@dataclass
class Bot:
    session: AgentSession[Any]
    llm: openai.LLM
    stt: deepgram.STT
    tts: openai.TTS
    microphone: ScriptedAudioInput
    sink: PlaybackSink
    closed: asyncio.Future[CloseEvent]
    #: STT reports as the Deepgram plugin itself emitted them (not through the session).
    stt_reports: list[STTMetrics]


def make_bot(
    providers: Providers,
    utterances: list[bytes],
    llm_model: str = LLM_MODEL,
    tts_model: str = TTS_MODEL,
    tts_url: str | None = None,
) -> Bot:
    llm = openai.LLM(model=llm_model, base_url=providers.openai.url + "/v1", api_key="sk-test")
    stt = deepgram.STT(
        model=STT_MODEL, base_url=providers.deepgram.url + "/v1/listen", api_key="dg-test", http_session=providers.http
    )
    tts = openai.TTS(
        model=tts_model,
        voice="alloy",
        base_url=(tts_url or providers.tts.url) + "/v1",
        api_key="sk-test",
        response_format="pcm",
    )
    # No VAD (no model weights offline): Deepgram's endpointing ends the user's turns. A session
    # closing waits for a last transcript of the audio it flushes; the stand-in sends none for silence.
    session: AgentSession[Any] = AgentSession(
        llm=llm, stt=stt, tts=tts, vad=None, session_close_transcript_timeout=0.2
    )
    sink = PlaybackSink()
    microphone = ScriptedAudioInput(utterances, sink)
    session.input.audio = microphone
    session.output.audio = sink
    closed: asyncio.Future[CloseEvent] = asyncio.get_running_loop().create_future()

    def on_close(event: CloseEvent) -> None:
        if not closed.done():
            closed.set_result(event)

    session.on("close", on_close)
    stt_reports: list[STTMetrics] = []
    stt.on("metrics_collected", lambda report: stt_reports.append(report) if report.audio_duration else None)
    return Bot(session, llm, stt, tts, microphone, sink, closed, stt_reports)


def ledger(server: VoiceMeterServer, call_id: str) -> list[Row]:
    """(service, operation, model, unit, amount) of the call's events, in seq order."""
    rows = server.sql(
        "SELECT service, operation, coalesce(model, ''), usage_unit, usage_amount::text FROM api_call_events"
        f" WHERE call_id = '{call_id}' ORDER BY seq"
    )
    return [(service, operation, model, unit, Decimal(amount)) for service, operation, model, unit, amount in rows]


def billed_llm_and_tts(providers: Providers) -> tuple[list[Row], list[Row]]:
    """The LLM and TTS rows the ledger must hold, from what each stand-in billed by its own log."""
    llm: list[Row] = []
    for request in providers.openai.requests:
        for unit, amount in (
            ("input_tokens", request.uncached_prompt_tokens),
            ("cached_input_tokens", request.cached_tokens),
            ("output_tokens", request.completion_tokens),
        ):
            if amount and request.usage_sent:
                llm.append(("openai", "chat_completion", request.model, unit, Decimal(amount)))
    tts: list[Row] = [
        ("openai", "tts_generation", request.model, "characters", Decimal(request.characters))
        for request in providers.tts.requests
    ]
    return llm, tts


async def wait_for(condition: Any, what: str, timeout: float = STEP_TIMEOUT) -> None:
    """Until `condition()` holds, checking as the event loop turns (fails after `timeout` s)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------------------------
# Integration: a real AgentSession, real stand-ins, a real server.
# ------------------------------------------------------------------------------------------------


async def test_a_conversation_is_metered_once_per_report_and_equals_the_provider_logs(
    priced: VoiceMeterServer, providers: Providers
) -> None:
    vm = VoiceMeter(url=priced.url, token=priced.token)
    call_id = new_id("CA")
    # Two turns, then 5 s of silence at once, so that the audio LiveKit reports (what it pushed)
    # stays above the STT connection's wall-clock life (LiveKit reports the larger of the two).
    bot = make_bot(providers, [utterance(), utterance(speech_ms=800), utterance(speech_ms=0, silence_ms=5000)])
    # livekit/agents#3166: a report reaching the session twice. Here every LLM and TTS report is
    # emitted on the session a second time, the same object, as a second listener did there.
    for plugin in (bot.llm, bot.tts):
        plugin.on(
            "metrics_collected",
            lambda report: bot.session.emit("metrics_collected", MetricsCollectedEvent(metrics=report)),
        )
    meter = await attach(bot.session, vm, call_id=call_id, user_id=new_id("user"), revenue="0.50")
    await bot.session.start(Agent(instructions=INSTRUCTIONS))

    await bot.sink.wait_played(2, STEP_TIMEOUT)
    await asyncio.wait_for(bot.microphone.finished.wait(), STEP_TIMEOUT)
    first = providers.deepgram.sessions[0]
    await wait_for(lambda: first.audio_bytes == bot.microphone.bytes_sent, "the stand-in to hear all the audio")
    # LiveKit's Deepgram plugin reports its audio every 5 s of wall time and when its socket
    # reconnects, and loses what is unreported when the session closes: a change of options
    # reconnects it, so that the first connection's audio is reported in full.
    bot.stt.update_options(language="en-US")
    await wait_for(lambda: first.closed and len(bot.stt_reports) >= 1, "LiveKit's report of the STT audio")
    await bot.session.aclose()
    summary = await asyncio.wait_for(meter.wait_closed(), STEP_TIMEOUT)
    await vm.close()

    # The conversation really happened, through every provider.
    assert [request.last_user_text for request in providers.openai.requests] == [
        "What is the weather like today?",
        "Thank you very much.",
    ]
    assert providers.openai.requests[1].cached_tokens > 0, "the second prompt reuses the first's prefix"
    assert first.transcripts == ["What is the weather like today?", "Thank you very much."]
    assert first.audio_seconds == Decimal("7.7")  # 1.2 s + 1.4 s + 5.1 s, all heard
    assert len(providers.tts.requests) >= 2 and bot.sink.played == 2 and bot.sink.audio_seconds > 0

    rows = ledger(priced, call_id)
    llm_expected, tts_expected = billed_llm_and_tts(providers)
    assert [row for row in rows if row[1] == "chat_completion"] == llm_expected
    assert [row for row in rows if row[1] == "tts_generation"] == tts_expected
    stt_rows = [row for row in rows if row[1] == "stt_streaming"]
    # What Deepgram billed the connections LiveKit closed before the session did. The one open at
    # the end (the audio LiveKit flushes while closing) is never reported by LiveKit 1.8.
    reported_sessions = providers.deepgram.sessions[:-1]
    assert stt_rows == [
        ("deepgram", "stt_streaming", session.model, "seconds", session.audio_seconds) for session in reported_sessions
    ]
    assert sum(row[4] for row in stt_rows) <= providers.deepgram.total_audio_seconds()
    assert len(rows) == len(llm_expected) + len(tts_expected) + len(stt_rows)
    # Each LLM and TTS report arrived twice and was counted once.
    assert meter.duplicates == len(providers.openai.requests) + len(providers.tts.requests)

    assert meter.call.refused == [] and meter.cutoff is None
    assert summary is not None and summary is meter.summary
    costs = priced.sql(f"SELECT coalesce(sum(total_cost), 0)::text FROM api_call_events WHERE call_id = '{call_id}'")
    assert summary.cost == Decimal(costs[0][0]) > 0
    assert set(summary.by_service) == {"openai", "deepgram"}
    assert priced.sql(f"SELECT status FROM calls WHERE call_id = '{call_id}'") == [("completed",)]


async def test_token_billed_tts_is_metered_in_tokens(priced: VoiceMeterServer, providers: Providers) -> None:
    """`gpt-4o-mini-tts` is billed per text and audio token, which OpenAI reports at the end of
    its SSE speech stream: the ledger holds those tokens (not characters), as the stand-in billed."""
    vm = VoiceMeter(url=priced.url, token=priced.token)
    call_id = new_id("CA")
    async with TokenSpeechStandin() as speech:
        bot = make_bot(providers, [utterance()], tts_model=TOKEN_TTS_MODEL, tts_url=speech.url)
        meter = await attach(bot.session, vm, call_id=call_id, user_id=new_id("user"))
        await bot.session.start(Agent(instructions=INSTRUCTIONS))
        await bot.sink.wait_played(1, STEP_TIMEOUT)
        await bot.session.aclose()
        summary = await asyncio.wait_for(meter.wait_closed(), STEP_TIMEOUT)
    await vm.close()

    assert speech.requests and all(r.stream_format == "sse" and r.complete for r in speech.requests)
    rows = ledger(priced, call_id)
    assert [row for row in rows if row[1] == "tts_generation"] == [
        ("openai", "tts_generation", TOKEN_TTS_MODEL, unit, Decimal(amount))
        for request in speech.requests
        for unit, amount in (("input_tokens", request.input_tokens), ("output_tokens", request.output_tokens))
    ]
    assert [row for row in rows if row[1] == "chat_completion"] == billed_llm_and_tts(providers)[0]
    assert summary is not None and summary.by_service["openai"] > 0


async def test_a_budget_cutoff_ends_the_session_and_the_call(
    priced: VoiceMeterServer, providers: Providers
) -> None:
    user = new_id("user")
    priced.set_budget(user, call_limit=CALL_LIMIT, auto_cutoff="on")
    vm = VoiceMeter(url=priced.url, token=priced.token)
    call_id = new_id("CA")
    # The caller asks one thing and stays on the line; nobody closes the session but the cutoff.
    bot = make_bot(providers, [utterance()], llm_model=DEAR_LLM_MODEL)
    meter = await attach(bot.session, vm, call_id=call_id, user_id=user)
    await bot.session.start(Agent(instructions=INSTRUCTIONS))

    closed = await asyncio.wait_for(bot.closed, STEP_TIMEOUT)
    summary = await asyncio.wait_for(meter.wait_closed(), STEP_TIMEOUT)
    await vm.close()

    assert closed.reason.value == "user_initiated" and closed.error is None
    assert meter.cutoff is not None and meter.cutoff.scope == "call"
    assert meter.cutoff.spent >= meter.cutoff.limit == Decimal(CALL_LIMIT)
    # The first completion crossed the limit.
    assert len(providers.openai.requests) == 1
    assert summary is not None and summary.cost >= Decimal(CALL_LIMIT)
    assert priced.sql(f"SELECT status, cutoff_reason FROM calls WHERE call_id = '{call_id}'") == [
        ("cut_off", "call_limit")
    ]
    # What was reported before the session closed is in the ledger.
    rows = ledger(priced, call_id)
    llm_expected, _ = billed_llm_and_tts(providers)
    assert [row for row in rows if row[1] == "chat_completion"] == llm_expected


async def test_duplicate_and_distinct_reports_through_a_session(priced: VoiceMeterServer) -> None:
    """Reports emitted on an (unstarted) session by hand: the same report twice, or a copy of it,
    counts once; two reports of one streaming request (Deepgram's periodic audio) both count."""
    vm = VoiceMeter(url=priced.url, token=priced.token)
    call_id = new_id("CA")
    session: AgentSession[Any] = AgentSession(vad=None)
    meter = await attach(session, vm, call_id=call_id, user_id=new_id("user"))
    llm_report = llm_metrics(prompt=120, cached=64, completion=17)
    stt_first = stt_metrics(audio=5.0, request_id="dg-1", timestamp=1.0)
    stt_second = stt_metrics(audio=2.35, request_id="dg-1", timestamp=2.0)
    for report in (llm_report, llm_report, llm_report.model_copy(), stt_first, stt_second, stt_first, vad_metrics()):
        session.emit("metrics_collected", MetricsCollectedEvent(metrics=report))
    summary = await meter.aclose()
    await vm.close()

    assert meter.duplicates == 3
    assert ledger(priced, call_id) == [
        ("openai", "chat_completion", LLM_MODEL, "input_tokens", Decimal(56)),
        ("openai", "chat_completion", LLM_MODEL, "cached_input_tokens", Decimal(64)),
        ("openai", "chat_completion", LLM_MODEL, "output_tokens", Decimal(17)),
        ("deepgram", "stt_streaming", STT_MODEL, "seconds", Decimal("5")),
        ("deepgram", "stt_streaming", STT_MODEL, "seconds", Decimal("2.35")),
    ]
    assert summary is not None and set(summary.by_service) == {"openai", "deepgram"}
    assert meter.totals[("deepgram", "stt_streaming", STT_MODEL, "seconds")] == Decimal("7.35")


async def test_a_cutoff_before_the_session_starts_ends_it_once_it_runs(
    priced: VoiceMeterServer, providers: Providers
) -> None:
    """A cutoff that arrives before `session.start` (here: usage reported on the call directly,
    e.g. telephony) is acted on once the session runs: closing one not started would do nothing
    (and would make LiveKit ignore a later `shutdown()`). Here with the `drain` action."""
    user = new_id("user")
    priced.set_budget(user, call_limit=CALL_LIMIT, auto_cutoff="on")
    vm = VoiceMeter(url=priced.url, token=priced.token)
    bot = make_bot(providers, [utterance()])
    meter = await attach(bot.session, vm, call_id=new_id("CA"), user_id=user, on_cutoff="drain")
    await meter.call.usage(
        service="openai", operation="chat_completion", unit="input_tokens", amount=1000, model=DEAR_LLM_MODEL
    )
    await wait_for(lambda: meter.cutoff is not None, "the cutoff")
    assert not bot.closed.done()

    await bot.session.start(Agent(instructions=INSTRUCTIONS))
    closed = await asyncio.wait_for(bot.closed, STEP_TIMEOUT)
    summary = await asyncio.wait_for(meter.wait_closed(), STEP_TIMEOUT)
    await vm.close()

    assert closed.reason.value == "user_initiated"
    assert summary is not None and summary.cost >= Decimal("0.05")


async def test_job_shutdown_ends_the_call_of_a_session_that_never_started(priced: VoiceMeterServer) -> None:
    """What `attach` registers as a job shutdown callback inside a LiveKit job: with no session
    close to wait for, it ends the call itself."""
    vm = VoiceMeter(url=priced.url, token=priced.token)
    session: AgentSession[Any] = AgentSession(vad=None)
    meter = await attach(session, vm, call_id=new_id("CA"), user_id=new_id("user"))
    await asyncio.wait_for(meter._on_job_shutdown(), STEP_TIMEOUT)
    await vm.close()
    assert meter.summary is not None and meter.summary.cost == 0
    assert priced.sql(f"SELECT status FROM calls WHERE call_id = '{meter.call.call_id}'") == [("completed",)]
