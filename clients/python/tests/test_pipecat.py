"""The Pipecat integration: a real Pipecat pipeline (scripted audio -> Deepgram STT -> OpenAI LLM ->
OpenAI TTS -> an output sink) talking to loopback stand-ins of the providers, its usage streamed
by `VoiceMeterObserver` to a real `voicemeter serve`. The ledger must equal what the stand-ins
billed by their own logs; a budget cutoff must end the pipeline. The mapping and the observer
alone: test_pipecat_usage.py, test_pipecat_observer.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from pipecat.frames.frames import EndFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.workers.runner import WorkerRunner

from conftest import VoiceMeterServer
from pipecat_helpers import SAMPLE_RATE, OutputSink, ReplyCollector, TranscriptToLLM, utterance
from standins import DeepgramStandin, OpenAIStandin, TTSStandin
from voicemeter import Call, VoiceMeter
from voicemeter.pipecat import VoiceMeterObserver

from pipecat_fakes import LLM_MODEL, STT_MODEL, TTS_MODEL
#: The cutoff tests' LLM, priced high so that its first completion alone crosses their call limit.
DEAR_LLM_MODEL, CALL_LIMIT = "gpt-4.1-dear", "0.001"
SYSTEM_PROMPT = "You are a helpful and concise voice assistant. Answer in one short sentence, politely."
STEP_TIMEOUT = 20.0


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------------------------------------
# Integration: a real pipeline, real stand-ins, a real server.
# ------------------------------------------------------------------------------------------------


@dataclass
class Providers:
    openai: OpenAIStandin
    deepgram: DeepgramStandin
    tts: TTSStandin

    async def wait_idle(self) -> None:
        for standin in (self.openai, self.deepgram, self.tts):
            await standin.wait_idle()


@pytest.fixture
async def providers() -> AsyncIterator[Providers]:
    async with (
        OpenAIStandin(replies=["Sure, it is sunny today.", "You are welcome, goodbye!"]) as openai,
        DeepgramStandin(transcripts=["What is the weather like today?", "Thank you very much."]) as deepgram,
        TTSStandin() as tts,
    ):
        yield Providers(openai, deepgram, tts)


@pytest.fixture(scope="module")
def priced(voicemeter_server: VoiceMeterServer) -> VoiceMeterServer:
    """Prices in force for the models the pipeline uses (list prices per token, per minute, per
    character; DEAR_LLM_MODEL's 100 times OpenAI's, so about 25 prompt tokens cost $0.00125)."""
    server = voicemeter_server
    for service, operation, unit, price, model in (
        ("openai", "chat_completion", "input_tokens", "0.00005", DEAR_LLM_MODEL),
        ("openai", "chat_completion", "cached_input_tokens", "0.0000125", DEAR_LLM_MODEL),
        ("openai", "chat_completion", "output_tokens", "0.0002", DEAR_LLM_MODEL),
        ("openai", "chat_completion", "input_tokens", "0.0000004", LLM_MODEL),
        ("openai", "chat_completion", "cached_input_tokens", "0.0000001", LLM_MODEL),
        ("openai", "chat_completion", "output_tokens", "0.0000016", LLM_MODEL),
        ("deepgram", "stt_streaming", "minutes", "0.0077", STT_MODEL),
        ("openai", "tts_generation", "characters", "0.000015", TTS_MODEL),
    ):
        server.set_price(service, operation, unit, price, model=model)
    return server


@pytest.fixture
async def vm(priced: VoiceMeterServer) -> AsyncIterator[VoiceMeter]:
    meter = VoiceMeter(url=priced.url, token=priced.token)
    yield meter
    await meter.close()


@pytest.fixture
async def bots() -> AsyncIterator[list[Bot]]:
    """The bots a test started; one still running when the test is over is cancelled."""
    started: list[Bot] = []
    yield started
    for bot in started:
        if not bot.running.done():
            await bot.runner.cancel()
            await asyncio.wait_for(asyncio.shield(bot.running), STEP_TIMEOUT)


@dataclass
class Bot:
    """A pipeline run by a WorkerRunner in the background."""

    worker: PipelineWorker
    sink: OutputSink
    meter: VoiceMeterObserver
    runner: WorkerRunner
    running: asyncio.Task[None]
    context: LLMContext

    async def say(self, *chunks: Any) -> None:
        await self.worker.queue_frames(list(chunks))

    async def next_turn(self) -> None:
        await asyncio.wait_for(self.sink.turns.get(), STEP_TIMEOUT)

    async def finished(self) -> None:
        await asyncio.wait_for(asyncio.shield(self.running), STEP_TIMEOUT)


async def start_bot(
    bots: list[Bot], providers: Providers, call: Call, llm_model: str = LLM_MODEL, **observer: Any
) -> Bot:
    context = LLMContext()
    stt = DeepgramSTTService(
        api_key="dg-test", base_url=providers.deepgram.ws_url, settings=DeepgramSTTService.Settings(model=STT_MODEL)
    )
    llm = OpenAILLMService(
        api_key="sk-test",
        base_url=providers.openai.url + "/v1",
        settings=OpenAILLMService.Settings(model=llm_model, system_instruction=SYSTEM_PROMPT),
    )
    tts = OpenAITTSService(
        api_key="sk-test", base_url=providers.tts.url + "/v1", settings=OpenAITTSService.Settings(model=TTS_MODEL)
    )
    sink = OutputSink()
    pipeline = Pipeline([stt, TranscriptToLLM(context), llm, ReplyCollector(context), tts, sink])
    meter = VoiceMeterObserver(call, **observer)
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(enable_usage_metrics=True, enable_metrics=True, audio_in_sample_rate=SAMPLE_RATE),
        observers=[meter],
        enable_rtvi=False,
        idle_timeout_secs=None,
    )
    meter.attach(worker)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    bot = Bot(worker, sink, meter, runner, running, context)
    bots.append(bot)
    return bot


Row = tuple[str, str, str, str, Decimal]


def ledger(server: VoiceMeterServer, call_id: str) -> list[Row]:
    """(service, operation, model, unit, amount) of the call's events, in seq order."""
    rows = server.sql(
        "SELECT service, operation, coalesce(model, ''), usage_unit, usage_amount::text FROM api_call_events"
        f" WHERE call_id = '{call_id}' ORDER BY seq"
    )
    return [(service, operation, model, unit, Decimal(amount)) for service, operation, model, unit, amount in rows]


def billed_by_providers(providers: Providers) -> tuple[list[Row], list[Row]]:
    """The LLM and TTS rows the ledger must hold, computed independently from what each stand-in
    billed by its own log (completions whose usage was sent; every speech request)."""
    llm: list[Row] = []
    for request in providers.openai.requests:
        if not request.usage_sent:
            continue
        for unit, amount in (
            ("input_tokens", request.uncached_prompt_tokens),
            ("cached_input_tokens", request.cached_tokens),
            ("output_tokens", request.completion_tokens),
        ):
            if amount:
                llm.append(("openai", "chat_completion", request.model, unit, Decimal(amount)))
    tts: list[Row] = [
        ("openai", "tts_generation", request.model, "characters", Decimal(request.characters))
        for request in providers.tts.requests
    ]
    return llm, tts


def assert_ledger_equals_provider_logs(rows: list[Row], providers: Providers) -> None:
    assert all(request.usage_sent for request in providers.openai.requests), "every completion ran through"
    llm_expected, tts_expected = billed_by_providers(providers)
    assert [row for row in rows if row[1] == "chat_completion"] == llm_expected
    assert [row for row in rows if row[1] == "tts_generation"] == tts_expected
    stt_rows = [row for row in rows if row[1] == "stt_streaming"]
    assert {row[:4] for row in stt_rows} == {("deepgram", "stt_streaming", STT_MODEL, "seconds")}
    assert sum(row[4] for row in stt_rows) == providers.deepgram.total_audio_seconds()
    assert len(rows) == len(llm_expected) + len(tts_expected) + len(stt_rows)


async def test_a_conversation_is_metered_once_per_metrics_frame_and_equals_the_provider_logs(
    priced: VoiceMeterServer, providers: Providers, vm: VoiceMeter, bots: list[Bot]
) -> None:
    call_id = new_id("CA")
    call = await vm.start_call(call_id=call_id, user_id=new_id("user"), revenue="0.50")
    bot = await start_bot(bots, providers, call)

    await bot.say(*utterance())
    await bot.next_turn()
    await bot.say(*utterance(speech_ms=600))
    await bot.next_turn()
    # Silence after the last words: the STT reports it when the pipeline ends.
    await bot.say(*utterance(speech_ms=0, silence_ms=400))
    await bot.worker.queue_frame(EndFrame())
    await bot.finished()
    await providers.wait_idle()
    summary = await call.end()

    # The conversation really happened, through every provider.
    assert len(providers.openai.requests) == 2
    assert providers.openai.requests[1].cached_tokens > 0, "the second prompt reuses the first's prefix"
    assert [s.transcripts for s in providers.deepgram.sessions] == [
        ["What is the weather like today?", "Thank you very much."]
    ]
    assert len(providers.tts.requests) >= 2 and bot.sink.audio_bytes > 0
    assert providers.deepgram.total_audio_seconds() == Decimal("2.4")  # 0.9 s + 1.1 s + 0.4 s of audio

    rows = ledger(priced, call_id)
    assert_ledger_equals_provider_logs(rows, providers)
    # STT usage is reported with each final transcript (what was sent so far) and, for the
    # trailing silence, when the pipeline ends.
    stt_seconds = [row[4] for row in rows if row[0] == "deepgram"]
    assert len(stt_seconds) == 3 and stt_seconds[2] >= Decimal("0.4")
    assert bot.meter.reported == len(rows) and bot.meter.dropped == 0
    assert call.refused == [] and call.cutoff is None
    assert summary is not None
    costs = priced.sql(f"SELECT coalesce(sum(total_cost), 0)::text FROM api_call_events WHERE call_id = '{call_id}'")
    assert summary.cost == Decimal(costs[0][0]) > 0


async def test_a_budget_cutoff_ends_the_pipeline_and_its_usage_is_recorded(
    priced: VoiceMeterServer, providers: Providers, vm: VoiceMeter, bots: list[Bot]
) -> None:
    call_id, user = new_id("CA"), new_id("user")
    # The speech before it costs less than this; the first completion more.
    priced.set_budget(user, call_limit=CALL_LIMIT, auto_cutoff="on")
    call = await vm.start_call(call_id=call_id, user_id=user)
    bot = await start_bot(bots, providers, call, llm_model=DEAR_LLM_MODEL)

    # The caller speaks once; nobody ends the pipeline but the cutoff its answer causes.
    await bot.say(*utterance())
    await bot.finished()
    assert bot.worker.has_finished()
    assert bot.meter.cutoff is not None and bot.meter.cutoff.scope == "call"
    assert bot.meter.cutoff.spent >= bot.meter.cutoff.limit == Decimal(CALL_LIMIT)
    assert [str(frame.reason) for frame in bot.sink.end_frames] == [
        f"voicemeter budget cutoff (call: spent {bot.meter.cutoff.spent} of {bot.meter.cutoff.limit})"
    ]
    await providers.wait_idle()
    await call.end()

    # What was used before and after the cutoff (the reply being spoken as the pipeline ends)
    # is all in the ledger, once.
    assert len(providers.openai.requests) == 1 and len(providers.tts.requests) >= 1
    rows = ledger(priced, call_id)
    assert_ledger_equals_provider_logs(rows, providers)
    assert bot.meter.dropped == 0 and call.refused == []


async def test_cancel_on_cutoff_cancels_the_pipeline_and_keeps_the_usage_it_reported(
    priced: VoiceMeterServer, providers: Providers, vm: VoiceMeter, bots: list[Bot]
) -> None:
    call_id, user = new_id("CA"), new_id("user")
    priced.set_budget(user, call_limit=CALL_LIMIT, auto_cutoff="on")
    call = await vm.start_call(call_id=call_id, user_id=user)
    bot = await start_bot(bots, providers, call, llm_model=DEAR_LLM_MODEL, on_cutoff="cancel")

    await bot.say(*utterance())
    await bot.finished()
    assert bot.meter.cutoff is not None and bot.sink.end_frames == []
    await providers.wait_idle()
    await call.end()

    # A cancelled pipeline drops what is queued, so only part of what the providers were asked
    # may have been reported: the ledger holds, in order, a prefix of what they billed, and at
    # least the completion that crossed the limit.
    rows = ledger(priced, call_id)
    llm_expected, tts_expected = billed_by_providers(providers)
    llm_rows = [row for row in rows if row[1] == "chat_completion"]
    tts_rows = [row for row in rows if row[1] == "tts_generation"]
    assert llm_rows == llm_expected[: len(llm_rows)] and len(llm_rows) >= 2
    assert tts_rows == tts_expected[: len(tts_rows)]
    stt_seconds = sum(row[4] for row in rows if row[1] == "stt_streaming")
    assert 0 < stt_seconds <= providers.deepgram.total_audio_seconds()
    assert bot.meter.dropped == 0
