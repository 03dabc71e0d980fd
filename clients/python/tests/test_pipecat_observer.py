"""The Pipecat observer: each metrics frame counted once, the cutoff actions, usage handed over
at cleanup (no server, no network)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

import pipecat
import pytest
from pipecat.frames.frames import EndFrame, Frame, MetricsFrame
from pipecat.metrics.metrics import STTUsage, STTUsageMetricsData, TTFBMetricsData, TTSUsageMetricsData
from pipecat.pipeline.worker import PipelineWorker
from pipecat.pipeline.worker_observer import WorkerObserver
from pipecat.utils.asyncio.task_manager import TaskManager

from voicemeter import BudgetCutoff

from pipecat_fakes import LLM_MODEL, STT_MODEL, TTS_MODEL, FakeCall, FakeWorker, acted, llm_metric, observer, pushed, services


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
