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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal, Unpack

from livekit.agents import (
    AgentSession,
    AgentStateChangedEvent,
    CloseEvent,
    MetricsCollectedEvent,
    get_job_context,
)
from livekit.agents.metrics import LLMMetrics, RealtimeModelMetrics, STTMetrics, TTSMetrics


from ._client import Call, CallDetails, VoiceMeter
from ._events import BudgetCutoff, CallEnded, CallSummary, VoiceMeterError

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

#: VoiceMeter service by provider host (exact, or a domain suffix when the key starts with ".")
#: or by LiveKit plugin (`livekit.plugins.NAME`). A plugin missing here is its own service name.
DEFAULT_SERVICES: Mapping[str, str] = {
    # hosts (OpenAI-compatible plugins report their base URL's host as the provider)
    "api.openai.com": "openai",
    ".openai.azure.com": "azure_openai",
    "api.groq.com": "groq",
    "api.cerebras.ai": "cerebras",
    "api.deepseek.com": "deepseek",
    "api.x.ai": "xai",
    "api.together.xyz": "together",
    "api.fireworks.ai": "fireworks",
    "openrouter.ai": "openrouter",
    "api.perplexity.ai": "perplexity",
    "api.mistral.ai": "mistral",
    "generativelanguage.googleapis.com": "google",
    # plugins
    "openai": "openai",
    "deepgram": "deepgram",
    "elevenlabs": "elevenlabs",
    "cartesia": "cartesia",
    "anthropic": "anthropic",
    "google": "google",
    "groq": "groq",
    "azure": "azure",
    "aws": "aws",
    "assemblyai": "assemblyai",
    "speechmatics": "speechmatics",
    "gladia": "gladia",
    "soniox": "soniox",
    "rime": "rime",
    "hume": "hume",
    "lmnt": "lmnt",
    "neuphonic": "neuphonic",
    "playai": "playai",
    "inworld": "inworld",
    "mistralai": "mistral",
    "livekit_inference": "livekit",
}

#: VoiceMeter operation by kind of report; a key `SERVICE:KIND` overrides one service's.
DEFAULT_OPERATIONS: Mapping[str, str] = {
    "llm": "chat_completion",
    "stt": "stt_streaming",
    "stt_batch": "stt_prerecorded",
    "tts": "tts_generation",
    "realtime": "realtime",
}

_MILLISECOND = Decimal("0.001")
_EXTERNAL_ID_MAX = 200
_FINGERPRINTS_KEPT = 4096

Kind = Literal["llm", "stt", "stt_batch", "tts", "realtime"]
Metrics = LLMMetrics | STTMetrics | TTSMetrics | RealtimeModelMetrics


@dataclass(frozen=True)
class ServiceTable:
    """How a LiveKit report is named in VoiceMeter: service by provider host or plugin,
    operation by kind of report (see `DEFAULT_SERVICES`, `DEFAULT_OPERATIONS`)."""

    services: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SERVICES))
    operations: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_OPERATIONS))

    def with_overrides(
        self,
        services: Mapping[str, str] | None = None,
        operations: Mapping[str, str] | None = None,
    ) -> ServiceTable:
        """A copy with these entries added or replaced."""
        return ServiceTable(
            services={**self.services, **(services or {})},
            operations={**self.operations, **(operations or {})},
        )

    def service(self, label: str, provider: str | None) -> str:
        """The service of a report from plugin class `label` (e.g. `livekit.plugins.openai.llm.LLM`)
        whose provider is `provider` (a host such as `api.groq.com:443`, or a name like `Deepgram`)."""
        host = _host(provider)
        if host:
            if host in self.services:
                return self.services[host]
            for key, service in self.services.items():
                if key.startswith(".") and host.endswith(key):
                    return service
        plugin = _plugin(label)
        if plugin:
            return self.services.get(plugin, plugin)
        if host:
            return host
        return "unknown"

    def operation(self, service: str, kind: Kind) -> str:
        """The operation of a report of this kind to this service."""
        return self.operations.get(f"{service}:{kind}") or self.operations.get(kind) or kind


DEFAULT_TABLE = ServiceTable()


@dataclass(frozen=True)
class MeteredUsage:
    """One usage frame made from a LiveKit report: what `Call.usage` is given."""

    service: str
    operation: str
    unit: str
    amount: int | Decimal
    model: str | None
    ts: datetime
    external_id: str | None
    metadata: dict[str, Any]


def usage_from_metrics(metrics: object, table: ServiceTable = DEFAULT_TABLE) -> list[MeteredUsage]:
    """The usage frames for one LiveKit metrics report; `[]` for reports without usage
    (VAD, end of utterance, a connection report, …). Amounts of zero are left out.

    LLM: `input_tokens` = prompt tokens not served from cache, `cached_input_tokens`,
    `output_tokens` (reasoning tokens are part of them). STT: `seconds` of audio (rounded to the
    millisecond), or `input_tokens`/`output_tokens` when the STT reports tokens (token-billed
    models). TTS: `characters`, or `input_tokens`/`output_tokens` when reported. Realtime:
    tokens per modality under `realtime_text`, `realtime_audio`, `realtime_image`, and session
    `seconds` under `realtime_session`.
    """
    if isinstance(metrics, LLMMetrics):
        return _llm(metrics, table)
    if isinstance(metrics, STTMetrics):
        return _stt(metrics, table)
    if isinstance(metrics, TTSMetrics):
        return _tts(metrics, table)
    if isinstance(metrics, RealtimeModelMetrics):
        return _realtime(metrics, table)
    return []


def _llm(m: LLMMetrics, table: ServiceTable) -> list[MeteredUsage]:
    cached = max(0, m.prompt_cached_tokens)
    cache_writes = int(getattr(m, "cache_creation_tokens", 0) or 0)  # not in LiveKit 1.2
    extra = {"cache_creation_tokens": cache_writes} if cache_writes else {}
    return _frames(
        m,
        "llm",
        table,
        [
            ("input_tokens", max(0, m.prompt_tokens - cached)),
            ("cached_input_tokens", cached),
            ("output_tokens", m.completion_tokens),
        ],
        extra,
    )


def _stt(m: STTMetrics, table: ServiceTable) -> list[MeteredUsage]:
    kind: Kind = "stt" if m.streamed else "stt_batch"
    input_tokens, output_tokens = _tokens(m)
    if input_tokens or output_tokens:
        amounts: list[tuple[str, int | Decimal]] = [
            ("input_tokens", input_tokens),
            ("output_tokens", output_tokens),
        ]
    else:
        amounts = [("seconds", _seconds(m.audio_duration))]
    return _frames(m, kind, table, amounts)


def _tts(m: TTSMetrics, table: ServiceTable) -> list[MeteredUsage]:
    input_tokens, output_tokens = _tokens(m)
    if input_tokens or output_tokens:
        amounts: list[tuple[str, int | Decimal]] = [
            ("input_tokens", input_tokens),
            ("output_tokens", output_tokens),
        ]
        extra: dict[str, Any] = {"characters": m.characters_count}
    else:
        amounts = [("characters", m.characters_count)]
        extra = {}
    segment_id = getattr(m, "segment_id", None)
    if segment_id:
        extra["segment_id"] = segment_id
    return _frames(m, "tts", table, amounts, extra)


def _tokens(m: STTMetrics | TTSMetrics) -> tuple[int, int]:
    """Token counts of a token-billed STT or TTS (0 with LiveKit 1.2, which has no such fields)."""
    return int(getattr(m, "input_tokens", 0) or 0), int(getattr(m, "output_tokens", 0) or 0)


def _realtime(m: RealtimeModelMetrics, table: ServiceTable) -> list[MeteredUsage]:
    details_in, details_out = m.input_token_details, m.output_token_details
    modal_in = {
        "text": details_in.text_tokens,
        "audio": details_in.audio_tokens,
        "image": details_in.image_tokens,
    }
    frames: list[MeteredUsage] = []
    if any(modal_in.values()) or details_out.text_tokens or details_out.audio_tokens:
        cached_by = getattr(details_in, "cached_tokens_details", None)
        if cached_by is not None:
            cached = {
                "text": cached_by.text_tokens,
                "audio": cached_by.audio_tokens,
                "image": cached_by.image_tokens,
            }
        else:  # no split given: attribute cache hits to text first, then audio, then image
            left = details_in.cached_tokens
            cached = {}
            for modality in ("text", "audio", "image"):
                cached[modality] = min(left, modal_in[modality])
                left -= cached[modality]
        out = {"text": details_out.text_tokens, "audio": details_out.audio_tokens, "image": 0}
        for modality in ("text", "audio", "image"):
            frames += _frames(
                m,
                "realtime",
                table,
                [
                    ("input_tokens", max(0, modal_in[modality] - cached[modality])),
                    ("cached_input_tokens", cached[modality]),
                    ("output_tokens", out[modality]),
                ],
                suffix=f"_{modality}",
            )
    else:
        cached_total = details_in.cached_tokens
        frames += _frames(
            m,
            "realtime",
            table,
            [
                ("input_tokens", max(0, m.input_tokens - cached_total)),
                ("cached_input_tokens", cached_total),
                ("output_tokens", m.output_tokens),
            ],
        )
    session_duration = float(getattr(m, "session_duration", 0.0) or 0.0)
    if session_duration:
        frames += _frames(
            m, "realtime", table, [("seconds", _seconds(session_duration))], suffix="_session"
        )
    return frames


def _frames(
    m: Metrics,
    kind: Kind,
    table: ServiceTable,
    amounts: list[tuple[str, int | Decimal]],
    extra: Mapping[str, Any] | None = None,
    *,
    suffix: str = "",
) -> list[MeteredUsage]:
    provider = m.metadata.model_provider if m.metadata else None
    model = m.metadata.model_name if m.metadata else None
    service = table.service(m.label, provider)
    operation = table.operation(service, kind) + suffix
    metadata: dict[str, Any] = {"livekit_label": m.label}
    if provider:
        metadata["provider"] = provider
    speech_id = getattr(m, "speech_id", None)
    if speech_id:
        metadata["speech_id"] = speech_id
    if getattr(m, "cancelled", False):
        metadata["cancelled"] = True
    metadata.update(extra or {})
    ts = datetime.fromtimestamp(m.timestamp, timezone.utc)
    external_id = m.request_id[:_EXTERNAL_ID_MAX] if m.request_id else None
    return [
        MeteredUsage(
            service=service,
            operation=operation,
            unit=unit,
            amount=amount,
            model=model if model and model != "unknown" else None,
            ts=ts,
            external_id=external_id,
            metadata=metadata,
        )
        for unit, amount in amounts
        if amount > 0
    ]


def _seconds(value: float) -> Decimal:
    """Seconds as reported (a float) to whole milliseconds, half-even."""
    return Decimal(repr(value)).quantize(_MILLISECOND, rounding=ROUND_HALF_EVEN)


def _host(provider: str | None) -> str:
    if not provider:
        return ""
    host = provider.strip().lower()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0]
    if host.startswith("["):  # [::1]:8080
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _plugin(label: str) -> str:
    """`livekit.plugins.NAME.…` → NAME; LiveKit Inference → `livekit_inference`."""
    parts = label.split(".")
    if len(parts) > 2 and parts[0] == "livekit" and parts[1] == "plugins":
        return parts[2]
    if label.startswith("livekit.agents.inference."):
        return "livekit_inference"
    return ""


def _fingerprint(m: Metrics) -> tuple[object, ...]:
    """What tells two reports apart: a copy of the same report (livekit/agents#3166) is equal."""
    return (
        m.type,
        m.label,
        m.request_id,
        getattr(m, "segment_id", None),
        m.timestamp,
        repr(m.model_dump(exclude={"metadata", "speech_id"})),
    )


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
