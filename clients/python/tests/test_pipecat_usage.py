"""The Pipecat mapping: which VoiceMeter usage each Pipecat metric becomes (no server, no network)."""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path

import pipecat
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    STTUsage,
    STTUsageMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.azure.realtime.llm import AzureRealtimeLLMService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.groq.llm import GroqLLMService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService

from voicemeter.pipecat import DEFAULT_SERVICES, ServiceMapping, Usage, usage_from_metrics

from pipecat_fakes import LLM_MODEL, FakeCall, llm_metric, observer


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
