"""Pipecat integration: stream a pipeline's usage metrics to VoiceMeter, end it on a budget cutoff.

```python
from voicemeter.pipecat import VoiceMeterObserver

call = await vm.start_call(call_id=call_sid, user_id=user_id, revenue="4.99")
meter = VoiceMeterObserver(call)
worker = PipelineWorker(pipeline, params=PipelineParams(enable_usage_metrics=True), observers=[meter])
meter.attach(worker)                  # what a budget cutoff ends
await runner.run()                    # WorkerRunner with the worker added
await call.end()                      # the call's summary: cost and margin
```

`VoiceMeterObserver` is a Pipecat observer (`PipelineWorker(observers=[…])`, or the deprecated
`PipelineTask(observers=[…])`; `PipelineParams(enable_usage_metrics=True)` is what makes the
services report usage). Each usage metric in a `MetricsFrame` becomes VoiceMeter usage of the
call, counted once although observers see a frame on every hop:

- `LLMUsageMetricsData`: `input_tokens` (uncached), `cached_input_tokens` and `output_tokens`.
  Services differ in what `prompt_tokens` means: OpenAI-style services (OpenAI, Google, Groq,
  …) count cache reads inside it, Anthropic-style ones (Anthropic, AWS Bedrock) do not
  (`ServiceMapping.prompt_tokens_include_cached`). Cache writes are input tokens.
  Audio tokens are priced apart from text tokens. Pipecat's speech-to-speech services (OpenAI
  Realtime, Azure Realtime, Gemini Live) count every token in `prompt_tokens` and
  `completion_tokens`, audio and cached ones included, and report the audio part in
  `input_audio_tokens`, `output_audio_tokens` and `cache_read_input_audio_tokens`. So the audio
  part is those three fields, under `realtime_audio`, and the text part (text, images, tool
  results, reasoning) is the totals minus them, under `realtime_text`: each token reported is
  counted once, and the operations add up to the totals. Cache hits whose modality the service
  does not report (Gemini omits it) are counted as text first, then audio. Any other LLM is
  unchanged when it reports no audio tokens; audio tokens it does report go under
  `OPERATION_audio` (`ServiceMapping.audio_operation`).
- `TTSUsageMetricsData`: `characters`.
- `STTUsageMetricsData`: `seconds` of audio the service was sent (Pipecat measures it on the
  client; continuous STT services stream silence too, which is what streaming STT bills),
  rounded to microseconds.

Zero amounts are not sent. The service, operation and model come from the processor that pushed
the frame: its class is looked up (through its bases) in `DEFAULT_SERVICES`, a table of
Pipecat's services, overridable with `VoiceMeterObserver(call, services={…})`; the model is the
one the service reports in its metrics unless the mapping names one.

On `budget.cutoff` the observer ends the pipeline it was attached to (`attach(worker)` or the
`worker=` argument): `on_cutoff="end"` (default) queues an `EndFrame` (graceful: what is queued
is spoken, services flush their last usage), `"cancel"` cancels the worker (`worker.cancel()`,
immediate), or a callable `cb(cutoff)` (sync or async) does what you want instead. A cutoff
that comes before `attach` waits for it (a warning says so) and is acted on at `attach`. The
cutoff is acted on once: an `EndFrame` that cannot be queued is logged and the worker is
cancelled instead; a cancel or callback that fails is logged. Usage that arrives after the
cutoff is still reported (the server records it).

`on_push_frame` never waits on VoiceMeter: it takes the usage, and a task of the observer's
hands it to `Call.usage` in order (which returns once the frame is buffered). When the pipeline
finishes, Pipecat cancels its observers' tasks and calls their `cleanup()`: this observer's
waits (at most `flush_timeout`) until every usage it has seen is handed over. (What Pipecat
still held in its own queue for the observer when it cancelled it never reaches it.)

The observer never raises into Pipecat: a usage it cannot send is logged (logger
`voicemeter.pipecat`) and counted in `VoiceMeterObserver.dropped`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol

from pipecat.frames.frames import EndFrame, Frame, MetricsFrame
from pipecat.metrics.metrics import (
    LLMUsageMetricsData,
    MetricsData,
    STTUsageMetricsData,
    TTSUsageMetricsData,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed

from ._call import Call
from ._events import BudgetCutoff
from ._pipecat_usage import (
    _NET_PACKAGES,
    DEFAULT_SERVICES,
    ServiceMapping,
    Usage,
    _operation_of,
    usage_from_metrics,
)

__all__ = [
    "DEFAULT_SERVICES",
    "CutoffAction",
    "PipelineLike",
    "ServiceMapping",
    "Usage",
    "VoiceMeterObserver",
    "usage_from_metrics",
]

logger = logging.getLogger("voicemeter.pipecat")


class PipelineLike(Protocol):
    """What the observer needs of the pipeline a cutoff ends: Pipecat's `PipelineWorker`, or
    the deprecated `PipelineTask`, has it."""

    async def queue_frame(self, frame: Frame) -> Any: ...

    async def cancel(self, *, reason: str | None = None) -> Any: ...

    def has_finished(self) -> bool: ...


CutoffAction = Literal["end", "cancel"] | Callable[[BudgetCutoff], Awaitable[None] | None]
"""What a budget cutoff does: `"end"` (queue an `EndFrame`), `"cancel"` (cancel the worker), or
your callback."""

_INSTANCE_SUFFIX = re.compile(r"#\d+$")
_SEEN_FRAMES_MAX = 4096


def _observer_kwargs() -> dict[str, Any]:
    """`observe_every_push=False` where Pipecat has it (it then only passes a frame's first push)."""
    if "observe_every_push" in inspect.signature(BaseObserver.__init__).parameters:
        return {"observe_every_push": False}
    return {}


class VoiceMeterObserver(BaseObserver):
    """Reports a Pipecat pipeline's usage metrics as usage of a VoiceMeter call, and ends the
    pipeline when the call is cut off. See the module's documentation.

    Args:
        call: The call, from `VoiceMeter.start_call` (or `vm.call(...)`).
        worker: The `PipelineWorker` (or `PipelineTask`) a cutoff ends; or give it later with
            `attach(worker)` (it is usually built with this observer in its `observers`).
        on_cutoff: `"end"` (default: queue an `EndFrame`, graceful), `"cancel"` (cancel the
            worker), or a callable `cb(cutoff)`, sync or async, called instead.
        services: Overrides of `DEFAULT_SERVICES`, keyed by a processor class, a class name, or
            a processor's name (`OpenAILLMService#0`, or the `name=` you gave it).
        metadata: Whether each usage carries `{"pipecat_processor": name}` as its metadata.
        flush_timeout: How long (seconds) `cleanup()`, Pipecat's teardown of the observer when
            the pipeline finishes, waits for the usage seen to be handed to `call.usage` (it
            only waits while the client's buffer of unacknowledged frames is full); `None`: no
            bound. What is not handed over by then is logged and counted in `dropped`.
    """

    def __init__(
        self,
        call: Call,
        *,
        worker: PipelineLike | None = None,
        on_cutoff: CutoffAction = "end",
        services: Mapping[type[Any] | str, ServiceMapping] | None = None,
        metadata: bool = True,
        flush_timeout: float | None = 10.0,
    ) -> None:
        super().__init__(**_observer_kwargs())
        if not callable(on_cutoff) and on_cutoff not in ("end", "cancel"):
            raise ValueError(f"on_cutoff must be 'end', 'cancel' or a callable, got {on_cutoff!r}")
        self.call = call
        self._worker: PipelineLike | None = worker
        self._on_cutoff: CutoffAction = on_cutoff
        self._overrides: dict[type[Any] | str, ServiceMapping] = dict(services or {})
        self._metadata = metadata
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._cutoff: BudgetCutoff | None = None
        self._acted = False
        self._action: asyncio.Task[None] | None = None
        self._flush_timeout = flush_timeout
        #: Usage seen and not yet handed to `Call.usage` (the first one is being handed over).
        self._unsent: deque[tuple[Usage, str]] = deque()
        self._sender: asyncio.Task[None] | None = None
        #: Usage quantities handed to `Call.usage` so far (one per call).
        self.reported = 0
        #: Usage quantities that could not be reported (logged).
        self.dropped = 0
        call.on_cutoff(self._cutoff_received)

    # The pipeline a cutoff ends.

    def attach(self, worker: PipelineLike) -> None:
        """Give the observer the `PipelineWorker` (or `PipelineTask`) a budget cutoff ends.

        Call it once the worker exists (it takes this observer in its `observers`, so it is
        built after it). A cutoff that has already come is acted on now.
        """
        self._worker = worker
        self._maybe_act()

    @property
    def worker(self) -> PipelineLike | None:
        """The attached worker, if any."""
        return self._worker

    @property
    def cutoff(self) -> BudgetCutoff | None:
        """The call's budget cutoff, once the server sent it."""
        return self._cutoff

    @property
    def cutoff_handled(self) -> asyncio.Task[None] | None:
        """The task acting on the cutoff (ending the pipeline), once started: await it to know
        the `EndFrame` is queued, the cancel requested or your callback returned."""
        return self._action

    def _cutoff_received(self, cutoff: BudgetCutoff) -> None:
        self._cutoff = cutoff
        action = self._on_cutoff
        if callable(action):
            doing = "calling the on_cutoff callback"
        elif self._worker is None:
            doing = (
                f"no pipeline is attached yet: it is {'ended' if action == 'end' else 'cancelled'} "
                "once one is (VoiceMeterObserver.attach(worker))"
            )
        else:
            doing = "ending the pipeline (EndFrame)" if action == "end" else "cancelling the pipeline"
        logger.warning(
            "call %s cut off (%s budget: spent %s of %s): %s",
            cutoff.call_id, cutoff.scope, cutoff.spent, cutoff.limit, doing,
        )
        self._maybe_act()

    def _maybe_act(self) -> None:
        if self._acted or self._cutoff is None:
            return
        if self._worker is None and not callable(self._on_cutoff):
            return  # acted on at attach()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # acted on once the pipeline runs (on_pipeline_started / the next frame)
        self._acted = True
        self._action = loop.create_task(self._act(self._cutoff), name="voicemeter-cutoff")

    async def _act(self, cutoff: BudgetCutoff) -> None:
        """Acts on the cutoff, once: a failure is logged (an `EndFrame` that cannot be queued
        falls back to cancelling the worker), never retried."""
        action = self._on_cutoff
        reason = f"voicemeter budget cutoff ({cutoff.scope}: spent {cutoff.spent} of {cutoff.limit})"
        if callable(action):
            try:
                result = action(cutoff)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("call %s: the on_cutoff callback failed", cutoff.call_id)
            return
        worker = self._worker
        if worker is None or worker.has_finished():
            return
        if action == "end":
            try:
                await worker.queue_frame(EndFrame(reason=reason))
                return
            except Exception:
                logger.exception(
                    "call %s: queueing an EndFrame on its cutoff failed; cancelling the pipeline "
                    "instead", cutoff.call_id,
                )
        try:
            await worker.cancel(reason=reason)
        except Exception:
            logger.exception("call %s: cancelling the pipeline on its cutoff failed", cutoff.call_id)

    # Pipecat's observer events.

    async def on_pipeline_started(self) -> None:
        """Acts on a cutoff that came before the pipeline ran."""
        self._maybe_act()

    async def on_push_frame(self, data: FramePushed) -> None:
        """Takes the usage metrics of each `MetricsFrame`, once per frame, and returns at once:
        they are handed to `Call.usage` in order by a task of the observer's own (see `flush`),
        so Pipecat's queue of frames for this observer never waits on VoiceMeter."""
        frame = data.frame
        if not isinstance(frame, MetricsFrame):
            return
        if not self._first_sight(frame.id):
            return
        self._maybe_act()
        for metric in frame.data:
            if not isinstance(metric, (LLMUsageMetricsData, STTUsageMetricsData, TTSUsageMetricsData)):
                continue
            try:
                mapping = self.mapping_for(metric, data.source)
                found = usage_from_metrics(metric, mapping)
            except Exception:
                logger.exception("could not map the usage metric %r", metric)
                self.dropped += 1
                continue
            self._unsent.extend((usage, metric.processor) for usage in found)
        if self._unsent and (self._sender is None or self._sender.done()):
            self._sender = asyncio.get_running_loop().create_task(
                self._send_unsent(), name="voicemeter-usage"
            )

    async def cleanup(self) -> None:
        """Pipecat's teardown of the observer (`PipelineWorker` calls it as the pipeline
        finishes): hands the usage seen to `Call.usage` first (`flush`)."""
        base_cleanup: Callable[[], Awaitable[None]] = super().cleanup  # untyped in Pipecat
        await base_cleanup()
        await self.flush()

    async def flush(self, timeout: float | None = None) -> None:
        """Waits until every usage seen has been handed to `Call.usage`: at most TIMEOUT
        seconds (default: the observer's `flush_timeout`). What is not handed over by then is
        given up, logged and counted in `dropped`."""
        sender = self._sender
        if sender is not None and not sender.done():
            bound = self._flush_timeout if timeout is None else timeout
            await asyncio.wait({sender}, timeout=bound)
            if not sender.done():
                sender.cancel()
                await asyncio.wait({sender})
        if self._unsent:
            lost = len(self._unsent)
            self._unsent.clear()
            self.dropped += lost
            logger.error(
                "call %s: %d usage quantities seen could not be handed to the client in time "
                "(its buffer of unacknowledged frames stayed full): not reported",
                self.call.call_id, lost,
            )

    async def _send_unsent(self) -> None:
        while self._unsent:
            usage, processor = self._unsent[0]  # stays unsent until handed over
            await self._report(usage, processor)
            self._unsent.popleft()

    def _first_sight(self, frame_id: int) -> bool:
        if frame_id in self._seen:
            return False
        self._seen[frame_id] = None
        if len(self._seen) > _SEEN_FRAMES_MAX:
            self._seen.popitem(last=False)
        return True

    async def _report(self, usage: Usage, processor: str) -> None:
        try:
            await self.call.usage(
                usage.service,
                usage.operation,
                usage.unit,
                usage.amount,
                model=usage.model,
                metadata={"pipecat_processor": processor} if self._metadata else None,
            )
            self.reported += 1
        except Exception as error:
            self.dropped += 1
            logger.error(
                "call %s: could not report %s %s of %s/%s: %s",
                self.call.call_id, usage.amount, usage.unit, usage.service, usage.operation, error,
            )

    # The mapping.

    def mapping_for(self, metric: MetricsData, processor: object | None = None) -> ServiceMapping:
        """How the usage in METRIC is named: from the processor that pushed it (PROCESSOR, when it
        is the one the metric names) or else from the metric's processor name."""
        name = metric.processor
        if name in self._overrides:
            return self._overrides[name]
        operation = _operation_of(metric)
        if processor is not None and getattr(processor, "name", None) == name:
            return self._mapping_for_class(type(processor), operation)
        class_name = _INSTANCE_SUFFIX.sub("", name)
        if class_name in self._overrides:
            return self._overrides[class_name]
        if class_name in DEFAULT_SERVICES:
            return DEFAULT_SERVICES[class_name]
        return ServiceMapping(class_name.lower() or "unknown", operation)

    def _mapping_for_class(self, cls: type[Any], operation: str) -> ServiceMapping:
        for base in cls.__mro__:
            override = self._overrides.get(base) or self._overrides.get(base.__name__)
            if override is not None:
                return override
            default = DEFAULT_SERVICES.get(base.__name__)
            if default is not None:
                return default
            module = base.__module__.split(".")
            if module[:2] == ["pipecat", "services"] and len(module) > 2:
                # A Pipecat service the table does not know: named after its own package, not
                # after the provider of a class it derives from (Groq is not OpenAI).
                package = module[2]
                return ServiceMapping(
                    package, operation, prompt_tokens_include_cached=package not in _NET_PACKAGES
                )
        return ServiceMapping(cls.__name__.lower(), operation)
