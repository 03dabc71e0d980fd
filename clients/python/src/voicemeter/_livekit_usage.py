"""How LiveKit Agents' metrics reports become VoiceMeter usage frames: the service and operation
tables and `usage_from_metrics` (used by `voicemeter.livekit`, which documents them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from livekit.agents.metrics import LLMMetrics, RealtimeModelMetrics, STTMetrics, TTSMetrics

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
