"""The Pipecat integration: a real Pipecat pipeline (scripted audio -> Deepgram STT -> OpenAI LLM ->
OpenAI TTS -> an output sink) talking to loopback stand-ins of the providers, its usage streamed
by `VoiceMeterObserver` to a real `voicemeter serve`. The ledger must equal what the stand-ins
billed by their own logs; a budget cutoff must end the pipeline. Plus unit tests of the mapping,
the once-per-frame counting and the cutoff actions."""

from __future__ import annotations

import ast
import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pipecat
import pytest
from pipecat.frames.frames import EndFrame, Frame, MetricsFrame
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    STTUsage,
    STTUsageMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.pipeline.worker_observer import WorkerObserver
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.azure.realtime.llm import AzureRealtimeLLMService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.groq.llm import GroqLLMService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.utils.asyncio.task_manager import TaskManager
from pipecat.workers.runner import WorkerRunner

from conftest import VoiceMeterServer
from pipecat_helpers import SAMPLE_RATE, OutputSink, ReplyCollector, TranscriptToLLM, utterance
from standins import DeepgramStandin, OpenAIStandin, TTSStandin
from voicemeter import BudgetCutoff, Call, VoiceMeter
from voicemeter.pipecat import DEFAULT_SERVICES, ServiceMapping, Usage, VoiceMeterObserver, usage_from_metrics

LLM_MODEL, STT_MODEL, TTS_MODEL = "gpt-4.1-mini", "nova-3", "gpt-4o-mini-tts"
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


# ------------------------------------------------------------------------------------------------
# Unit tests: the mapping, once per frame, the cutoff actions (no server, no network).
# ------------------------------------------------------------------------------------------------


def llm_metric(prompt: int, completion: int, cache_read: int | None = None, cache_write: int | None = None,
               processor: str = "OpenAILLMService#0", model: str = LLM_MODEL) -> LLMUsageMetricsData:
    return LLMUsageMetricsData(
        processor=processor,
        model=model,
        value=LLMTokenUsage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
            cache_read_input_tokens=cache_read, cache_creation_input_tokens=cache_write,
        ),
    )


def amounts(usages: list[Usage]) -> dict[str, int | Decimal]:
    return {usage.unit: usage.amount for usage in usages}


def test_openai_style_prompt_tokens_contain_the_cached_ones() -> None:
    openai = DEFAULT_SERVICES["OpenAILLMService"]
    usages = usage_from_metrics(llm_metric(1200, 40, cache_read=1024), openai)
    assert amounts(usages) == {"input_tokens": 176, "cached_input_tokens": 1024, "output_tokens": 40}
    assert {(u.service, u.operation, u.model) for u in usages} == {("openai", "chat_completion", LLM_MODEL)}


def test_anthropic_style_prompt_tokens_exclude_the_cached_ones() -> None:
    anthropic = DEFAULT_SERVICES["AnthropicLLMService"]
    assert not anthropic.prompt_tokens_include_cached
    usages = usage_from_metrics(
        llm_metric(176, 40, cache_read=1024, cache_write=50, processor="AnthropicLLMService#0", model="claude"),
        anthropic,
    )
    # Cache writes are input (billed at least at the input rate); reads are the cached part.
    assert amounts(usages) == {"input_tokens": 226, "cached_input_tokens": 1024, "output_tokens": 40}
    assert usages[0].service == "anthropic"


def test_no_cache_and_zero_amounts() -> None:
    openai = DEFAULT_SERVICES["OpenAILLMService"]
    assert amounts(usage_from_metrics(llm_metric(30, 0), openai)) == {"input_tokens": 30}
    stt = STTUsageMetricsData(processor="DeepgramSTTService#0", model="nova-3", value=STTUsage(audio_seconds=0.0))
    assert usage_from_metrics(stt, DEFAULT_SERVICES["DeepgramSTTService"]) == []
    ttfb = TTFBMetricsData(processor="OpenAILLMService#0", value=0.2)
    assert usage_from_metrics(ttfb, openai) == []


def test_stt_seconds_are_exact_decimals_and_tts_characters_whole() -> None:
    total = sum([0.02] * 31)  # 0.6200000000000003 in binary floating point
    stt = STTUsageMetricsData(processor="DeepgramSTTService#0", model="nova-3", value=STTUsage(audio_seconds=total))
    (seconds,) = usage_from_metrics(stt, DEFAULT_SERVICES["DeepgramSTTService"])
    assert (seconds.unit, seconds.amount) == ("seconds", Decimal("0.620000"))
    tts = TTSUsageMetricsData(processor="ElevenLabsTTSService#0", model="eleven_flash_v2_5", value=57)
    (characters,) = usage_from_metrics(tts, DEFAULT_SERVICES["ElevenLabsTTSService"])
    assert characters == Usage("elevenlabs", "tts_generation", "characters", 57, "eleven_flash_v2_5")


def test_a_mapping_may_name_the_model() -> None:
    usages = usage_from_metrics(llm_metric(10, 5), ServiceMapping("acme", "chat", model="acme-large"))
    assert {(u.service, u.operation, u.model) for u in usages} == {("acme", "chat", "acme-large")}


@dataclass
class FakeCall:
    """What the observer uses of a `voicemeter.Call`, recording its usage."""

    call_id: str = "CA-unit"
    usages: list[tuple[str, str, str, Any, str | None]] = field(default_factory=list)
    cutoff_callbacks: list[Any] = field(default_factory=list)

    async def usage(self, service: str, operation: str, unit: str, amount: Any, *, model: str | None = None,
                    **_: Any) -> int:
        self.usages.append((service, operation, unit, amount, model))
        return len(self.usages)

    def on_cutoff(self, callback: Any) -> None:
        self.cutoff_callbacks.append(callback)

    def cut_off(self) -> BudgetCutoff:
        cutoff = BudgetCutoff(self.call_id, "call", Decimal("0.02"), Decimal("0.01"))
        for callback in self.cutoff_callbacks:
            callback(cutoff)
        return cutoff


def observer(call: FakeCall, **kwargs: Any) -> VoiceMeterObserver:
    return VoiceMeterObserver(cast(Call, call), **kwargs)


def pushed(frame: Frame, source: FrameProcessor, destination: FrameProcessor, first: bool = True) -> FramePushed:
    return FramePushed(source=source, destination=destination, frame=frame, direction=FrameDirection.DOWNSTREAM,
                       timestamp=0, first_push=first)


def services() -> tuple[DeepgramSTTService, OpenAILLMService, OpenAITTSService]:
    return (
        DeepgramSTTService(api_key="dg-test", settings=DeepgramSTTService.Settings(model=STT_MODEL)),
        OpenAILLMService(api_key="sk-test", settings=OpenAILLMService.Settings(model=LLM_MODEL)),
        OpenAITTSService(api_key="sk-test", settings=OpenAITTSService.Settings(model=TTS_MODEL)),
    )


async def test_each_metrics_frame_is_counted_once_over_its_hops() -> None:
    call = FakeCall()
    meter = observer(call)
    stt, llm, tts = services()
    frame = MetricsFrame(data=[llm_metric(100, 10, cache_read=64, processor=llm.name)])
    # The frame as every processor passes it on: LLM -> TTS -> sink, and seen again.
    await meter.on_push_frame(pushed(frame, llm, tts))
    await meter.on_push_frame(pushed(frame, tts, stt, first=False))
    await meter.on_push_frame(pushed(frame, stt, llm, first=False))
    await meter.on_push_frame(pushed(frame, llm, tts))
    await meter.flush()
    assert call.usages == [
        ("openai", "chat_completion", "input_tokens", 36, LLM_MODEL),
        ("openai", "chat_completion", "cached_input_tokens", 64, LLM_MODEL),
        ("openai", "chat_completion", "output_tokens", 10, LLM_MODEL),
    ]
    # Another frame with the same figures is new usage.
    await meter.on_push_frame(pushed(MetricsFrame(data=[llm_metric(100, 10, 64, processor=llm.name)]), llm, tts))
    await meter.flush()
    assert len(call.usages) == 6 and meter.reported == 6


async def test_the_service_comes_from_the_processor_that_pushed_the_metrics() -> None:
    call = FakeCall()
    meter = observer(call)
    stt, llm, tts = services()
    frame = MetricsFrame(data=[
        STTUsageMetricsData(processor=stt.name, model=STT_MODEL, value=STTUsage(audio_seconds=1.5)),
        TTFBMetricsData(processor=stt.name, value=0.1),
    ])
    await meter.on_push_frame(pushed(frame, stt, llm))
    await meter.on_push_frame(pushed(MetricsFrame(data=[TTSUsageMetricsData(processor=tts.name, model=TTS_MODEL,
                                                                             value=42)]), tts, llm))
    await meter.flush()
    assert call.usages == [
        ("deepgram", "stt_streaming", "seconds", Decimal("1.500000"), STT_MODEL),
        ("openai", "tts_generation", "characters", 42, TTS_MODEL),
    ]


class MyLLM(OpenAILLMService):
    """An application's own subclass of a Pipecat service."""


def test_mapping_by_class_bases_packages_and_overrides() -> None:
    meter = observer(FakeCall())
    mine = MyLLM(api_key="sk-test", settings=OpenAILLMService.Settings(model=LLM_MODEL))
    groq = GroqLLMService(api_key="gsk-test", settings=GroqLLMService.Settings(model="llama-3.3-70b-versatile"))

    def mapping(processor: FrameProcessor) -> ServiceMapping:
        return meter.mapping_for(llm_metric(1, 1, processor=processor.name), processor)

    assert mapping(mine) == DEFAULT_SERVICES["OpenAILLMService"]  # a subclass bills as its base
    assert mapping(groq).service == "groq"  # Groq derives from OpenAI's service but is not OpenAI
    # Known only by the name in the metric (the frame seen past its first hop).
    assert meter.mapping_for(llm_metric(1, 1, processor="AnthropicLLMService#3")).service == "anthropic"
    assert meter.mapping_for(llm_metric(1, 1, processor="SomethingNew#0")).service == "somethingnew"

    azure = ServiceMapping("azure_openai", "chat_completion", model="gpt-4.1-mini-eu")
    by_class = observer(FakeCall(), services={OpenAILLMService: azure})
    assert by_class.mapping_for(llm_metric(1, 1, processor=mine.name), mine) == azure
    by_class_name = observer(FakeCall(), services={"GroqLLMService": azure})
    assert by_class_name.mapping_for(llm_metric(1, 1, processor=groq.name), groq) == azure
    by_processor_name = observer(FakeCall(), services={groq.name: azure})
    assert by_processor_name.mapping_for(llm_metric(1, 1, processor=groq.name), groq) == azure
    assert by_processor_name.mapping_for(llm_metric(1, 1, processor=mine.name), mine).service == "openai"


def test_every_class_in_the_table_is_a_pipecat_service() -> None:
    """The table names classes that exist in the installed Pipecat (read from its sources, so
    services whose extras are not installed are checked too)."""
    root = Path(pipecat.__file__).parent / "services"
    classes = {
        node.name
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
    }
    assert sorted(set(DEFAULT_SERVICES) - classes) == []


class FakeWorker:
    """What the observer uses of a `PipelineWorker`, recording what a cutoff did."""

    def __init__(self) -> None:
        self.queued: list[Frame] = []
        self.cancelled: list[str | None] = []
        self.finished = False

    async def queue_frame(self, frame: Frame) -> None:
        self.queued.append(frame)

    async def cancel(self, *, reason: str | None = None) -> None:
        self.cancelled.append(reason)

    def has_finished(self) -> bool:
        return self.finished


async def acted(meter: VoiceMeterObserver) -> None:
    assert meter.cutoff_handled is not None
    await asyncio.wait_for(meter.cutoff_handled, 5)


async def test_a_cutoff_queues_an_end_frame_by_default() -> None:
    call, worker = FakeCall(), FakeWorker()
    meter = observer(call, worker=worker)
    cutoff = call.cut_off()
    await acted(meter)
    assert meter.cutoff == cutoff
    assert [type(frame) for frame in worker.queued] == [EndFrame] and worker.cancelled == []
    assert "budget cutoff" in str(cast(EndFrame, worker.queued[0]).reason)


async def test_a_cutoff_may_cancel_the_worker_instead() -> None:
    call, worker = FakeCall(), FakeWorker()
    meter = observer(call, on_cutoff="cancel")
    call.cut_off()
    assert meter.cutoff_handled is None  # nothing to end yet: acted on at attach
    meter.attach(worker)
    await acted(meter)
    assert worker.queued == [] and len(worker.cancelled) == 1


async def test_a_cutoff_may_call_the_applications_callback() -> None:
    call, worker = FakeCall(), FakeWorker()
    seen: list[BudgetCutoff] = []

    async def hang_up(cutoff: BudgetCutoff) -> None:
        seen.append(cutoff)

    meter = observer(call, worker=worker, on_cutoff=hang_up)
    cutoff = call.cut_off()
    call.cut_off()  # acted on once
    await acted(meter)
    assert seen == [cutoff] and worker.queued == [] and worker.cancelled == []


async def test_a_cutoff_after_the_pipeline_finished_does_nothing() -> None:
    call, worker = FakeCall(), FakeWorker()
    worker.finished = True
    meter = observer(call, worker=worker)
    call.cut_off()
    await acted(meter)
    assert worker.queued == [] and worker.cancelled == []


def test_on_cutoff_is_checked() -> None:
    with pytest.raises(ValueError):
        observer(FakeCall(), on_cutoff=cast(Any, "hangup"))


# ------------------------------------------------------------------------------------------------
# Realtime (speech-to-speech) services: audio tokens are not text tokens.
# ------------------------------------------------------------------------------------------------


def realtime_metric(prompt: int, completion: int, *, cached: int | None = None, audio_in: int | None = None,
                    audio_out: int | None = None, audio_cached: int | None = None,
                    processor: str = "OpenAIRealtimeLLMService#0", model: str = "gpt-realtime") -> LLMUsageMetricsData:
    """Usage as Pipecat 1.14's OpenAI Realtime and Gemini Live services report it: `prompt_tokens`
    and `completion_tokens` are every token of the response (cached, audio and text alike), the
    audio fields the audio part of them."""
    return LLMUsageMetricsData(
        processor=processor,
        model=model,
        value=LLMTokenUsage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
            cache_read_input_tokens=cached, input_audio_tokens=audio_in, output_audio_tokens=audio_out,
            cache_read_input_audio_tokens=audio_cached,
        ),
    )


def by_operation(usages: list[Usage]) -> dict[tuple[str, str], dict[str, int | Decimal]]:
    found: dict[tuple[str, str], dict[str, int | Decimal]] = {}
    for usage in usages:
        found.setdefault((usage.service, usage.operation), {})[usage.unit] = usage.amount
    return found


def assert_nothing_lost_or_doubled(usages: list[Usage], metric: LLMUsageMetricsData) -> None:
    """The modalities add up to what the provider reported: every prompt token once (cached or
    not), every completion token once, every cache hit once."""
    tokens = metric.value

    def total(unit: str) -> int | Decimal:
        return sum(usage.amount for usage in usages if usage.unit == unit)

    assert total("input_tokens") + total("cached_input_tokens") == tokens.prompt_tokens
    assert total("cached_input_tokens") == (tokens.cache_read_input_tokens or 0)
    assert total("output_tokens") == tokens.completion_tokens


def test_openai_realtime_audio_tokens_are_reported_apart_from_text_tokens() -> None:
    # 1000 prompt tokens: 800 audio (500 of them cached), 200 text (100 cached); 500 completion
    # tokens: 400 audio, 100 text.
    metric = realtime_metric(1000, 500, cached=600, audio_in=800, audio_out=400, audio_cached=500)
    usages = usage_from_metrics(metric, DEFAULT_SERVICES["OpenAIRealtimeLLMService"])
    assert by_operation(usages) == {
        ("openai", "realtime_text"): {"input_tokens": 100, "cached_input_tokens": 100, "output_tokens": 100},
        ("openai", "realtime_audio"): {"input_tokens": 300, "cached_input_tokens": 500, "output_tokens": 400},
    }
    assert {usage.model for usage in usages} == {"gpt-realtime"}
    assert_nothing_lost_or_doubled(usages, metric)


def test_gemini_live_cache_hits_without_a_modality_breakdown_count_as_text_first() -> None:
    # Gemini names no modality for the cache here: its 400 hits fill the 300 text tokens first.
    metric = realtime_metric(1000, 250, cached=400, audio_in=700, audio_out=200,
                             processor="GeminiLiveLLMService#0", model="gemini-live-2.5-flash")
    usages = usage_from_metrics(metric, DEFAULT_SERVICES["GeminiLiveLLMService"])
    assert by_operation(usages) == {
        ("google", "realtime_text"): {"cached_input_tokens": 300, "output_tokens": 50},
        ("google", "realtime_audio"): {"input_tokens": 600, "cached_input_tokens": 100, "output_tokens": 200},
    }
    assert_nothing_lost_or_doubled(usages, metric)


def test_modalities_always_add_up_to_what_the_provider_reported() -> None:
    realtime = DEFAULT_SERVICES["OpenAIRealtimeLLMService"]
    for prompt, completion, cached, audio_in, audio_out, audio_cached in (
        (1000, 500, None, 1000, 500, None),  # audio only
        (1000, 500, 1000, 1000, 500, 1000),  # all cached
        (300, 40, 0, 0, 0, 0),  # a text-only response
        (300, 40, 120, None, None, None),  # no breakdown at all
        (900, 10, 850, 100, 0, 0),  # more cache hits than text tokens, audio cache said to be 0
        (900, 10, 50, 100, 0, 80),  # audio cache hits said to exceed all hits
    ):
        metric = realtime_metric(prompt, completion, cached=cached, audio_in=audio_in, audio_out=audio_out,
                                 audio_cached=audio_cached)
        usages = usage_from_metrics(metric, realtime)
        assert_nothing_lost_or_doubled(usages, metric)
        assert {usage.operation for usage in usages} <= {"realtime_text", "realtime_audio"}
        audio = by_operation(usages).get(("openai", "realtime_audio"), {})
        assert sum(audio.get(unit, 0) for unit in ("input_tokens", "cached_input_tokens")) == min(audio_in or 0, prompt)


def test_other_llms_are_unchanged_without_audio_and_bill_audio_apart_with_it() -> None:
    openai = DEFAULT_SERVICES["OpenAILLMService"]
    expected = {("openai", "chat_completion"): {"input_tokens": 176, "cached_input_tokens": 1024, "output_tokens": 40}}
    for audio in (None, 0):
        metric = realtime_metric(1200, 40, cached=1024, audio_in=audio, audio_out=audio, audio_cached=audio,
                                 processor="OpenAILLMService#0")
        assert by_operation(usage_from_metrics(metric, openai)) == expected
    # A chat model that hears and speaks: its audio tokens are not priced as text.
    metric = realtime_metric(1200, 40, cached=1024, audio_in=150, audio_out=30, audio_cached=0,
                             processor="OpenAILLMService#0")
    usages = usage_from_metrics(metric, openai)
    assert by_operation(usages) == {
        ("openai", "chat_completion"): {"input_tokens": 26, "cached_input_tokens": 1024, "output_tokens": 10},
        ("openai", "chat_completion_audio"): {"input_tokens": 150, "output_tokens": 30},
    }
    assert_nothing_lost_or_doubled(usages, metric)


def test_realtime_services_and_their_subclasses_are_mapped_per_modality() -> None:
    meter = observer(FakeCall())
    for service, processor in (
        ("openai", OpenAIRealtimeLLMService(api_key="sk-test")),
        ("azure", AzureRealtimeLLMService(api_key="az-test", base_url="wss://example.invalid/openai/realtime")),
    ):
        metric = realtime_metric(100, 50, cached=10, audio_in=80, audio_out=40, audio_cached=10, processor=processor.name)
        usages = usage_from_metrics(metric, meter.mapping_for(metric, processor))
        assert by_operation(usages) == {
            (service, "realtime_text"): {"input_tokens": 20, "output_tokens": 10},
            (service, "realtime_audio"): {"input_tokens": 70, "cached_input_tokens": 10, "output_tokens": 40},
        }


# ------------------------------------------------------------------------------------------------
# A cutoff with nothing attached yet, and a cutoff action that fails.
# ------------------------------------------------------------------------------------------------


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "voicemeter.pipecat" and record.levelno == level]


async def test_a_cutoff_before_attach_says_it_waits_for_attach(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voicemeter.pipecat")
    call, worker = FakeCall(), FakeWorker()
    meter = observer(call)
    call.cut_off()
    assert meter.cutoff_handled is None
    (warning,) = messages(caplog, logging.WARNING)
    assert "attach" in warning and "ending the pipeline" not in warning
    meter.attach(worker)
    await acted(meter)
    assert [type(frame) for frame in worker.queued] == [EndFrame]


class FailingWorker(FakeWorker):
    """A worker whose `queue_frame` (and, if asked, `cancel`) raises."""

    def __init__(self, cancel_fails: bool = False) -> None:
        super().__init__()
        self.cancel_fails = cancel_fails

    async def queue_frame(self, frame: Frame) -> None:
        raise RuntimeError("the push queue is closed")

    async def cancel(self, *, reason: str | None = None) -> None:
        await super().cancel(reason=reason)
        if self.cancel_fails:
            raise RuntimeError("cannot cancel")


async def test_an_end_that_fails_is_logged_and_falls_back_to_cancel(caplog: pytest.LogCaptureFixture) -> None:
    call, worker = FakeCall(), FailingWorker()
    meter = observer(call, worker=worker)
    call.cut_off()
    await acted(meter)
    assert len(worker.cancelled) == 1 and "budget cutoff" in str(worker.cancelled[0])
    errors = messages(caplog, logging.ERROR)
    assert len(errors) == 1 and "EndFrame" in errors[0] and "cancel" in errors[0]


async def test_a_cutoff_action_that_fails_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    for on_cutoff, attempts in (("cancel", 1), ("end", 1)):
        caplog.clear()
        call, worker = FakeCall(), FailingWorker(cancel_fails=True)
        meter = observer(call, worker=worker, on_cutoff=on_cutoff)
        call.cut_off()
        await acted(meter)
        call.cut_off()  # one-shot: not tried again
        meter.attach(worker)
        assert meter.cutoff_handled is not None and meter.cutoff_handled.done()
        assert len(worker.cancelled) == attempts
        errors = messages(caplog, logging.ERROR)
        assert errors and all(call.call_id in error for error in errors)
        assert len(errors) == (2 if on_cutoff == "end" else 1)  # the EndFrame, then the cancel


# ------------------------------------------------------------------------------------------------
# The last metrics: Pipecat cancels observers' tasks at cleanup without draining them.
# ------------------------------------------------------------------------------------------------


@dataclass
class FullBufferCall(FakeCall):
    """A call whose client buffer is full: `usage` waits until `room` is set."""

    room: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: asyncio.Event = field(default_factory=asyncio.Event)

    async def usage(self, service: str, operation: str, unit: str, amount: Any, *, model: str | None = None,
                    **kwargs: Any) -> int:
        self.waiting.set()
        await self.room.wait()
        return await super().usage(service, operation, unit, amount, model=model, **kwargs)


async def test_usage_seen_before_the_worker_cleans_its_observers_up_is_all_handed_over() -> None:
    call = FullBufferCall()
    meter = observer(call)
    stt, llm, tts = services()
    host = WorkerObserver(observers=[meter])  # what PipelineWorker runs its observers in
    await host.setup(TaskManager(loop=asyncio.get_running_loop()))
    frame = MetricsFrame(data=[llm_metric(100, 10, cache_read=64, processor=llm.name)])
    await host.on_push_frame(pushed(frame, llm, tts))
    await asyncio.wait_for(call.waiting.wait(), 5)  # the observer has the frame, the buffer is full
    # The pipeline ends: the worker cleans its observers up while the buffer is still full.
    cleaning = asyncio.create_task(host.cleanup())
    call.room.set()  # acknowledgements come in
    await asyncio.wait_for(cleaning, 5)
    assert call.usages == [
        ("openai", "chat_completion", "input_tokens", 36, LLM_MODEL),
        ("openai", "chat_completion", "cached_input_tokens", 64, LLM_MODEL),
        ("openai", "chat_completion", "output_tokens", 10, LLM_MODEL),
    ]
    assert meter.reported == 3 and meter.dropped == 0


async def test_usage_that_cannot_be_handed_over_at_cleanup_is_counted_dropped(caplog: pytest.LogCaptureFixture) -> None:
    call = FullBufferCall()  # its buffer never empties
    meter = observer(call, flush_timeout=0.05)
    stt, llm, tts = services()
    host = WorkerObserver(observers=[meter])
    await host.setup(TaskManager(loop=asyncio.get_running_loop()))
    await host.on_push_frame(pushed(MetricsFrame(data=[llm_metric(100, 10, cache_read=64, processor=llm.name)]), llm, tts))
    await asyncio.wait_for(call.waiting.wait(), 5)
    await asyncio.wait_for(host.cleanup(), 5)
    assert call.usages == [] and meter.reported == 0 and meter.dropped == 3
    errors = messages(caplog, logging.ERROR)
    assert len(errors) == 1 and "3" in errors[0] and call.call_id in errors[0]
