"""Stand-ins for the Pipecat unit tests: a call that records usage, a worker that records what a
cutoff does, and metrics as Pipecat reports them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from pipecat.frames.frames import Frame
from pipecat.metrics.metrics import LLMTokenUsage, LLMUsageMetricsData
from pipecat.observers.base_observer import FramePushed
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.tts import OpenAITTSService

from voicemeter import BudgetCutoff, Call
from voicemeter.pipecat import VoiceMeterObserver



LLM_MODEL, STT_MODEL, TTS_MODEL = "gpt-4.1-mini", "nova-3", "gpt-4o-mini-tts"


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
