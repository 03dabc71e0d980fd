"""How Pipecat's usage metrics become VoiceMeter usage: the service table and
`usage_from_metrics` (used by `voicemeter.pipecat`, which documents them)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from types import MappingProxyType

from pipecat.metrics.metrics import (
    LLMUsageMetricsData,
    MetricsData,
    STTUsageMetricsData,
    TTSUsageMetricsData,
)

logger = logging.getLogger("voicemeter.pipecat")

@dataclass(frozen=True)
class ServiceMapping:
    """How a Pipecat service's usage is named in VoiceMeter (and priced by the server).

    `service`, `operation`: the price key's first parts (e.g. `openai`, `chat_completion`); for
    an LLM, the operation of its text tokens.
    `model`: the model to report; `None` reports the one the service names in its metrics.
    `prompt_tokens_include_cached`: whether the service's `prompt_tokens` already contain the
    cached (and cache-write) tokens, as OpenAI-style APIs count them (True), or exclude them, as
    Anthropic-style APIs do (False). Only LLM usage reads it.
    `audio_operation`: the operation of an LLM's audio tokens (`input_audio_tokens`,
    `output_audio_tokens`, `cache_read_input_audio_tokens`); `None`: `OPERATION_audio`.
    """

    service: str
    operation: str
    model: str | None = None
    prompt_tokens_include_cached: bool = True
    audio_operation: str | None = None

    @property
    def audio(self) -> str:
        """The operation audio tokens are reported under."""
        return self.audio_operation if self.audio_operation is not None else f"{self.operation}_audio"


def _m(service: str, operation: str, *, net: bool = False) -> ServiceMapping:
    return ServiceMapping(service, operation, prompt_tokens_include_cached=not net)


def _realtime(service: str) -> ServiceMapping:
    """A speech-to-speech service: text and audio tokens priced apart, as LiveKit's are."""
    return ServiceMapping(service, "realtime_text", audio_operation="realtime_audio")


_LLM, _STT, _TTS = "chat_completion", "stt_streaming", "tts_generation"

#: Pipecat service class name -> how VoiceMeter names its usage. A class not listed here is
#: looked up by its bases; a Pipecat service class that is not listed (a newer service) is
#: named after its package (`pipecat.services.NAME…`) with the operation of its metric
#: (`chat_completion`, `stt_streaming`, `tts_generation`), never after a base class's provider.
DEFAULT_SERVICES: Mapping[str, ServiceMapping] = MappingProxyType(
    {
        # LLMs. OpenAI-compatible APIs count cached tokens inside prompt_tokens.
        "OpenAILLMService": _m("openai", _LLM),
        "OpenAIResponsesLLMService": _m("openai", _LLM),
        "OpenAIResponsesHttpLLMService": _m("openai", _LLM),
        "OpenAIRealtimeLLMService": _realtime("openai"),
        "AzureLLMService": _m("azure", _LLM),
        "AzureRealtimeLLMService": _realtime("azure"),
        "GoogleLLMService": _m("google", _LLM),
        "GoogleVertexLLMService": _m("google_vertex", _LLM),
        "GeminiLiveLLMService": _realtime("google"),
        "GeminiLiveVertexLLMService": _realtime("google_vertex"),
        "GroqLLMService": _m("groq", _LLM),
        "CerebrasLLMService": _m("cerebras", _LLM),
        "TogetherLLMService": _m("together", _LLM),
        "FireworksLLMService": _m("fireworks", _LLM),
        "DeepSeekLLMService": _m("deepseek", _LLM),
        "OpenRouterLLMService": _m("openrouter", _LLM),
        "MistralLLMService": _m("mistral", _LLM),
        "GrokLLMService": _m("xai", _LLM),
        "PerplexityLLMService": _m("perplexity", _LLM),
        "NebiusLLMService": _m("nebius", _LLM),
        "SambaNovaLLMService": _m("sambanova", _LLM),
        "OLLamaLLMService": _m("ollama", _LLM),
        "QwenLLMService": _m("qwen", _LLM),
        "NvidiaLLMService": _m("nvidia", _LLM),
        # Anthropic-style APIs report input tokens net of the cache.
        "AnthropicLLMService": _m("anthropic", _LLM, net=True),
        "AWSBedrockLLMService": _m("aws_bedrock", _LLM, net=True),
        # Speech to text: seconds of audio sent.
        "DeepgramSTTService": _m("deepgram", _STT),
        "DeepgramFluxSTTService": _m("deepgram", _STT),
        "AssemblyAISTTService": _m("assemblyai", _STT),
        "CartesiaSTTService": _m("cartesia", _STT),
        "ElevenLabsRealtimeSTTService": _m("elevenlabs", _STT),
        "ElevenLabsSTTService": _m("elevenlabs", "stt_batch"),
        "OpenAIRealtimeSTTService": _m("openai", _STT),
        "OpenAISTTService": _m("openai", "stt_batch"),
        "GroqSTTService": _m("groq", "stt_batch"),
        "GladiaSTTService": _m("gladia", _STT),
        "SpeechmaticsSTTService": _m("speechmatics", _STT),
        "SonioxSTTService": _m("soniox", _STT),
        "AzureSTTService": _m("azure", _STT),
        "GoogleSTTService": _m("google", _STT),
        "AWSTranscribeSTTService": _m("aws_transcribe", _STT),
        # Text to speech: characters.
        "ElevenLabsTTSService": _m("elevenlabs", _TTS),
        "ElevenLabsHttpTTSService": _m("elevenlabs", _TTS),
        "OpenAITTSService": _m("openai", _TTS),
        "CartesiaTTSService": _m("cartesia", _TTS),
        "CartesiaHttpTTSService": _m("cartesia", _TTS),
        "DeepgramTTSService": _m("deepgram", _TTS),
        "DeepgramHttpTTSService": _m("deepgram", _TTS),
        "AzureTTSService": _m("azure", _TTS),
        "AzureHttpTTSService": _m("azure", _TTS),
        "GoogleTTSService": _m("google", _TTS),
        "GoogleHttpTTSService": _m("google", _TTS),
        "AWSPollyTTSService": _m("aws_polly", _TTS),
        "RimeTTSService": _m("rime", _TTS),
        "RimeHttpTTSService": _m("rime", _TTS),
        "FishAudioTTSService": _m("fish", _TTS),
        "InworldTTSService": _m("inworld", _TTS),
        "HumeTTSService": _m("hume", _TTS),
        "NeuphonicTTSService": _m("neuphonic", _TTS),
        "GroqTTSService": _m("groq", _TTS),
    }
)

#: Services (named after their Pipecat package) whose unlisted LLM classes report prompt tokens
#: net of the cache.
_NET_PACKAGES = frozenset({"anthropic"})

_OPERATION_BY_METRIC: dict[type[MetricsData], str] = {
    LLMUsageMetricsData: _LLM,
    STTUsageMetricsData: _STT,
    TTSUsageMetricsData: _TTS,
}

_MICROSECOND = Decimal("0.000001")


@dataclass(frozen=True)
class Usage:
    """One usage quantity to report: the arguments of `Call.usage`."""

    service: str
    operation: str
    unit: str
    amount: int | Decimal
    model: str | None


def usage_from_metrics(metric: MetricsData, mapping: ServiceMapping) -> list[Usage]:
    """The usage in one Pipecat metric, named by MAPPING; `[]` for a metric that is not usage
    (TTFB, processing time, …) and for zero amounts."""
    model = mapping.model if mapping.model is not None else (metric.model or None)
    found: list[Usage] = []
    if isinstance(metric, LLMUsageMetricsData):
        found = [
            Usage(mapping.service, operation, unit, amount, model)
            for operation, unit, amount in _llm_tokens(metric, mapping)
        ]
    elif isinstance(metric, TTSUsageMetricsData):
        found = [Usage(mapping.service, mapping.operation, "characters", int(metric.value), model)]
    elif isinstance(metric, STTUsageMetricsData):
        seconds = Decimal(repr(float(metric.value.audio_seconds))).quantize(_MICROSECOND, ROUND_HALF_EVEN)
        found = [Usage(mapping.service, mapping.operation, "seconds", seconds, model)]
    return [item for item in found if item.amount > 0]


def _llm_tokens(metric: LLMUsageMetricsData, mapping: ServiceMapping) -> list[tuple[str, str, int]]:
    """(operation, unit, tokens) of an LLM metric: its text part under `mapping.operation`, its
    audio part under `mapping.audio`, each as uncached input, cache reads and output.

    The audio fields are parts of the totals (Pipecat's OpenAI Realtime and Gemini Live services
    count every modality, and the cache hits, in `prompt_tokens` and `completion_tokens`), so
    text = totals − audio: every token reported is counted once, in one modality. Cache hits
    whose modality is not reported are text's first (as LiveKit's integration counts them).
    """
    tokens = metric.value
    cache_read = tokens.cache_read_input_tokens or 0
    cache_write = tokens.cache_creation_input_tokens or 0
    # Every input token, cached or not.
    if mapping.prompt_tokens_include_cached:
        prompt = tokens.prompt_tokens
    else:
        prompt = tokens.prompt_tokens + cache_write + cache_read
    if cache_read > prompt:
        logger.warning(
            "%s reported %d prompt tokens with %d cached: is prompt_tokens_include_cached right "
            "for it? Counting the cached ones only",
            metric.processor, tokens.prompt_tokens, cache_read,
        )
    reported_in = tokens.input_audio_tokens or 0
    reported_out = tokens.output_audio_tokens or 0
    audio_in = min(reported_in, prompt)
    audio_out = min(reported_out, tokens.completion_tokens)
    text_in = prompt - audio_in
    # The audio cache hits: as reported, within what the audio and the cache hold, and no fewer
    # than the text tokens cannot hold.
    least = max(0, cache_read - text_in)
    reported_cached = tokens.cache_read_input_audio_tokens
    audio_cached = least if reported_cached is None else reported_cached
    audio_cached = min(max(audio_cached, least), audio_in, cache_read)
    if (audio_in, audio_out) != (reported_in, reported_out) or (
        reported_cached is not None and audio_cached != reported_cached and cache_read <= prompt
    ):
        logger.warning(
            "%s reported audio tokens that do not fit its totals (prompt %d, of them audio %d; "
            "cached %d, of them audio %s; completion %d, of them audio %d): counting %d audio "
            "prompt tokens, %d of them cached, and %d audio completion tokens",
            metric.processor, tokens.prompt_tokens, reported_in, cache_read, reported_cached,
            tokens.completion_tokens, reported_out, audio_in, audio_cached, audio_out,
        )
    text_cached = cache_read - audio_cached
    return [
        (mapping.operation, "input_tokens", max(0, text_in - text_cached)),
        (mapping.operation, "cached_input_tokens", text_cached),
        (mapping.operation, "output_tokens", tokens.completion_tokens - audio_out),
        (mapping.audio, "input_tokens", audio_in - audio_cached),
        (mapping.audio, "cached_input_tokens", audio_cached),
        (mapping.audio, "output_tokens", audio_out),
    ]


def _operation_of(metric: MetricsData) -> str:
    for kind, operation in _OPERATION_BY_METRIC.items():
        if isinstance(metric, kind):
            return operation
    return "usage"
