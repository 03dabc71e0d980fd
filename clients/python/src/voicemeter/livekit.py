"""Meter a LiveKit Agents 1.x `AgentSession` with VoiceMeter.

```python
from voicemeter import VoiceMeter
from voicemeter.livekit import attach

vm = VoiceMeter(url="wss://meter.example.com/v1/stream", token="vmi_…")
meter = await attach(session, vm, call_id=ctx.room.name, user_id=user_id)  # raises CallRejected
await session.start(agent, room=ctx.room)
```

`attach` starts the VoiceMeter call (or takes a `Call` you started), turns every usage report
LiveKit emits into VoiceMeter usage frames, ends the session when the server sends
`budget.cutoff`, and ends the VoiceMeter call when the session closes.

**Where the numbers come from.** The session's `metrics_collected` event, one report per request:
`LLMMetrics` (uncached input, cached input and output tokens), `STTMetrics` (audio seconds, or
tokens for token-billed STT), `TTSMetrics` (characters, or tokens for token-billed TTS),
`RealtimeModelMetrics` (text/audio/image tokens). LiveKit marks this event deprecated in favour of
`session_usage_updated` (and logs a warning when it is subscribed to), but that event only carries running totals per provider/model: no request
id to drop a report LiveKit delivers twice (livekit/agents#3166), no plugin to route by (an
OpenAI-compatible plugin's provider is just its host), no time. Only `metrics_collected` is used,
so nothing is counted from two sources; a report delivered twice (the same request id, time and
amounts) is sent once. The request id alone does not identify a report: Deepgram's streaming STT
reports its audio every few seconds under one request id, and a streaming TTS reports each segment
under its stream's id.

**Service, operation, model.** The service comes from the provider host (`api.groq.com` → `groq`)
or else the LiveKit plugin (`livekit.plugins.deepgram…` → `deepgram`); the operation from the kind
of report (`chat_completion`, `stt_streaming`, `stt_prerecorded`, `tts_generation`, `realtime_*`);
the model is the plugin's. Both tables are overridable (`services=`, `operations=`).

**Limits of what LiveKit reports** (LiveKit Agents 1.8): Deepgram's streaming STT reports its audio
every 5 s of wall time and when its WebSocket reconnects; the audio since the last report is lost
when the session closes (LiveKit cancels the stream's metrics task), so a call under 5 s reports no
STT at all. An LLM request cancelled before its usage chunk arrives reports no tokens. VoiceMeter
records what LiveKit reports.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, Literal, Unpack

from livekit.agents import (
    AgentSession,
    AgentStateChangedEvent,
    CloseEvent,
    MetricsCollectedEvent,
    get_job_context,
)
from livekit.agents.metrics import LLMMetrics, RealtimeModelMetrics, STTMetrics, TTSMetrics

from ._call import Call
from ._client import VoiceMeter
from ._messages import CallDetails
from ._events import BudgetCutoff, CallEnded, CallSummary, VoiceMeterError
from ._livekit_usage import (
    _FINGERPRINTS_KEPT,
    DEFAULT_OPERATIONS,
    DEFAULT_SERVICES,
    DEFAULT_TABLE,
    MeteredUsage,
    ServiceTable,
    _fingerprint,
    usage_from_metrics,
)

__all__ = [
    "DEFAULT_OPERATIONS",
    "DEFAULT_SERVICES",
    "DEFAULT_TABLE",
    "CutoffAction",
    "MeteredUsage",
    "ServiceTable",
    "SessionMeter",
    "attach",
    "usage_from_metrics",
]

logger = logging.getLogger("voicemeter.livekit")




CutoffCallback = Callable[[AgentSession[Any], BudgetCutoff], Awaitable[None] | None]
CutoffAction = Literal["close", "drain", "ignore"] | CutoffCallback
"""What to do with the session on `budget.cutoff`: `"close"` (default) `await session.aclose()`,
interrupting the agent at once; `"drain"` `session.shutdown(drain=True)`, letting the current
reply finish; `"ignore"` nothing (read `SessionMeter.cutoff`); or a callable
`(session, cutoff)` (sync or async), e.g. to say goodbye and hang up the room."""


def _check_cutoff_action(action: object) -> None:
    if not callable(action) and action not in ("close", "drain", "ignore"):
        raise ValueError(f"on_cutoff must be 'close', 'drain', 'ignore' or a callable, not {action!r}")


class SessionMeter:
    """The link between one `AgentSession` and one VoiceMeter call (made by `attach`)."""

    def __init__(
        self,
        session: AgentSession[Any],
        call: Call,
        *,
        table: ServiceTable,
        on_cutoff: CutoffAction,
        end_call: bool,
    ) -> None:
        self.session = session
        #: The VoiceMeter call the session's usage goes to.
        self.call = call
        #: Usage sent so far, by (service, operation, model, unit).
        self.totals: dict[tuple[str, str, str | None, str], Decimal] = {}
        #: Reports LiveKit delivered more than once and that were sent once.
        self.duplicates = 0
        _check_cutoff_action(on_cutoff)
        self._table = table
        self._on_cutoff = on_cutoff
        self._end_call = end_call
        self._fingerprints: OrderedDict[tuple[object, ...], None] = OrderedDict()
        self._queue: asyncio.Queue[MeteredUsage | None] = asyncio.Queue()
        self._reports = 0
        self._started = False
        self._cutoff_deferred = False
        self._cutoff_done = False
        self._detached = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sender = asyncio.get_running_loop().create_task(
            self._send_all(), name=f"voicemeter.livekit {call.call_id}"
        )
        self._closed: asyncio.Task[CallSummary | None] | None = None
        self._closing = asyncio.Event()
        # LiveKit logs a deprecation warning for this subscription; see the module docstring.
        session.on("metrics_collected", self._on_metrics)
        session.on("agent_state_changed", self._on_state)
        session.on("close", self._on_close)
        call.on_cutoff(self._on_budget_cutoff)
        job = get_job_context(required=False)
        if job is not None:
            # Job shutdown callbacks run together and the process exits after them: wait there
            # for the session's close (LiveKit closes it in its own callback) and the call's end.
            job.add_shutdown_callback(self._on_job_shutdown)

    @property
    def cutoff(self) -> BudgetCutoff | None:
        """The server's `budget.cutoff` for this call, if it came."""
        return self.call.cutoff

    @property
    def summary(self) -> CallSummary | None:
        """The call's summary once it has ended."""
        return self.call.summary

    def detach(self) -> None:
        """Stop listening to the session: usage already taken is still sent, and the call is
        then ended by `aclose()`, no longer by the session's close."""
        if self._detached:
            return
        self._detached = True
        self.session.off("metrics_collected", self._on_metrics)
        self.session.off("agent_state_changed", self._on_state)
        self.session.off("close", self._on_close)
        self._queue.put_nowait(None)

    async def aclose(self) -> CallSummary | None:
        """Detach, send what is queued and end the call (unless `attach` was told not to);
        returns its summary. Idempotent; the session's `close` event starts the same."""
        return await asyncio.shield(self._begin_close())

    async def wait_closed(self) -> CallSummary | None:
        """Wait until the session has closed (or `aclose` was called) and the call has ended;
        returns its summary. Raises what ending the call raised (e.g. `CallNotSettled`)."""
        await self._closing.wait()
        assert self._closed is not None
        return await asyncio.shield(self._closed)

    def _begin_close(self) -> asyncio.Task[CallSummary | None]:
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_task(
                self._close(), name=f"voicemeter.livekit close {self.call.call_id}"
            )
            self._closed.add_done_callback(self._log_close_failure)
            self._closing.set()
        return self._closed

    def _log_close_failure(self, task: asyncio.Task[CallSummary | None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.warning("ending call %s: %s", self.call.call_id, error)

    # LiveKit events (called synchronously by the session's emitter).

    def _on_metrics(self, event: MetricsCollectedEvent) -> None:
        metrics = event.metrics
        if not isinstance(metrics, LLMMetrics | STTMetrics | TTSMetrics | RealtimeModelMetrics):
            return
        key = _fingerprint(metrics)
        if key in self._fingerprints:
            self.duplicates += 1
            logger.debug("dropping a report LiveKit delivered twice: %r", metrics)
            return
        self._fingerprints[key] = None
        if len(self._fingerprints) > _FINGERPRINTS_KEPT:
            self._fingerprints.popitem(last=False)
        self._reports += 1
        for usage in usage_from_metrics(metrics, self._table):
            self._queue.put_nowait(usage)

    def _on_state(self, event: AgentStateChangedEvent) -> None:
        if event.new_state != "initializing":
            self._started = True
            if self._cutoff_deferred:
                self._cutoff_deferred = False
                self._act_on_cutoff()

    def _on_close(self, event: CloseEvent) -> None:
        self._begin_close()

    async def _on_job_shutdown(self) -> None:
        try:
            if self._started:
                await self.wait_closed()
            else:  # never started: no close event will come
                await self.aclose()
        except VoiceMeterError as error:
            logger.warning("ending call %s at job shutdown: %s", self.call.call_id, error)

    def _on_budget_cutoff(self, cutoff: BudgetCutoff) -> None:
        logger.warning(
            "call %s cut off (%s: spent %s of %s)",
            cutoff.call_id,
            cutoff.scope,
            cutoff.spent,
            cutoff.limit,
        )
        if self._detached:
            return
        if not self._started and self.session.agent_state == "initializing":
            # Closing a session that has not started would be a no-op (and LiveKit's
            # shutdown() would then ignore later calls): act once it has started.
            self._cutoff_deferred = True
            return
        self._act_on_cutoff()

    def _act_on_cutoff(self) -> None:
        if self._cutoff_done or self.call.cutoff is None:
            return
        self._cutoff_done = True
        action = self._on_cutoff
        if action == "ignore":
            return
        if action == "drain":
            self.session.shutdown(drain=True)
            return
        if action == "close":
            self._spawn(self.session.aclose())
            return
        if callable(action):
            try:
                result = action(self.session, self.call.cutoff)
            except Exception:
                logger.exception("the on_cutoff callback failed")
                return
            if inspect.isawaitable(result):
                self._spawn(result)
            return
        raise ValueError(f"unknown on_cutoff action {action!r}")

    # Sending.

    async def _send_all(self) -> None:
        ended_logged = False
        while True:
            usage = await self._queue.get()
            if usage is None:
                return
            try:
                await self.call.usage(
                    service=usage.service,
                    operation=usage.operation,
                    unit=usage.unit,
                    amount=usage.amount,
                    model=usage.model,
                    ts=usage.ts,
                    external_id=usage.external_id,
                    metadata=usage.metadata,
                )
            except CallEnded:
                if not ended_logged:
                    logger.warning(
                        "call %s has ended: LiveKit usage reported after it is not recorded",
                        self.call.call_id,
                    )
                    ended_logged = True
                continue
            except (ValueError, TypeError, VoiceMeterError):
                logger.exception("could not send %r", usage)
                continue
            key = (usage.service, usage.operation, usage.model, usage.unit)
            self.totals[key] = self.totals.get(key, Decimal(0)) + Decimal(usage.amount)

    async def _close(self) -> CallSummary | None:
        self.detach()
        await self._sender
        if self._reports == 0 and self._session_reports_usage():
            logger.warning(
                "the session reports usage in session.usage but no metrics_collected event "
                "reached VoiceMeter: this LiveKit version may no longer emit them"
            )
        if not self._end_call:
            return None
        return await self.call.end()

    def _session_reports_usage(self) -> bool:
        """Whether LiveKit's own running totals show any usage (a cross-check: nothing is summed)."""
        try:
            usage = self.session.usage
        except Exception:  # noqa: BLE001 - a cross-check only
            return False
        return any(
            getattr(model_usage, name, 0)
            for model_usage in usage.model_usage
            for name in ("input_tokens", "output_tokens", "characters_count", "audio_duration")
        )

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._action_done)

    def _action_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("ending the session on cutoff failed", exc_info=error)


async def attach(
    session: AgentSession[Any],
    vm: VoiceMeter | Call,
    *,
    call_id: str | None = None,
    user_id: str | None = None,
    on_cutoff: CutoffAction = "close",
    end_call: bool = True,
    services: Mapping[str, str] | None = None,
    operations: Mapping[str, str] | None = None,
    **details: Unpack[CallDetails],
) -> SessionMeter:
    """Meter `session` with VoiceMeter; call it before `session.start(...)`.

    `vm` is a `VoiceMeter` (the call `call_id` of `user_id` is started here, with `details`:
    `revenue`, `currency`, `payment_method`, `persona_id`; `CallRejected` is raised when the server
    refuses it, so the session is never started), or a `Call` you started. On `budget.cutoff`
    the session is ended as `on_cutoff` says (see `CutoffAction`). When the session closes, the
    queued usage is sent and the call is ended (`end_call=False` leaves it open, e.g. to meter
    telephony after the agent leaves); `await meter.wait_closed()` returns its summary. Inside a
    LiveKit job, the job's shutdown waits for that. `services` and `operations` add to or replace entries of
    `DEFAULT_SERVICES` and `DEFAULT_OPERATIONS`.
    """
    _check_cutoff_action(on_cutoff)
    if isinstance(vm, Call):
        call = vm
        if call_id is not None and call_id != call.call_id:
            raise ValueError(f"call_id {call_id!r} is not the given call's ({call.call_id!r})")
    else:
        if call_id is None or user_id is None:
            raise ValueError("attach(session, vm, …) needs call_id and user_id to start the call")
        call = await vm.start_call(call_id, user_id, **details)
    table = DEFAULT_TABLE.with_overrides(services, operations)
    return SessionMeter(session, call, table=table, on_cutoff=on_cutoff, end_call=end_call)
