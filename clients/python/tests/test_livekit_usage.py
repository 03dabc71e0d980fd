"""The LiveKit mapping: which VoiceMeter usage frames each LiveKit metrics report becomes (no
server, no network)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from livekit.agents.metrics import RealtimeModelMetrics
from livekit.agents.metrics.base import Metadata
from livekit.plugins import deepgram, openai

from livekit_helpers import LLM_MODEL, NOW, STT_MODEL, llm_metrics, stt_metrics, tts_metrics, vad_metrics
from voicemeter.livekit import DEFAULT_SERVICES, MeteredUsage, ServiceTable, usage_from_metrics


def frames(usages: list[MeteredUsage]) -> list[tuple[str, str, str | None, str, int | Decimal]]:
    return [(u.service, u.operation, u.model, u.unit, u.amount) for u in usages]


def test_llm_report_splits_uncached_cached_and_output_tokens() -> None:
    usages = usage_from_metrics(llm_metrics(prompt=9747, cached=8192, completion=212))
    assert frames(usages) == [
        ("openai", "chat_completion", LLM_MODEL, "input_tokens", 1555),
        ("openai", "chat_completion", LLM_MODEL, "cached_input_tokens", 8192),
        ("openai", "chat_completion", LLM_MODEL, "output_tokens", 212),
    ]
    assert {u.external_id for u in usages} == {"chatcmpl-1"}
    assert usages[0].ts == datetime.fromtimestamp(NOW, timezone.utc)
    assert usages[0].metadata["livekit_label"] == "livekit.plugins.openai.llm.LLM"


def test_zero_amounts_and_reports_without_usage_give_no_frames() -> None:
    assert frames(usage_from_metrics(llm_metrics(prompt=30, cached=0, completion=0))) == [
        ("openai", "chat_completion", LLM_MODEL, "input_tokens", 30)
    ]
    assert usage_from_metrics(stt_metrics(audio=0.0, request_id="")) == []  # a connection report
    assert usage_from_metrics(vad_metrics()) == []


def test_openai_compatible_plugins_are_routed_by_host_and_local_ones_by_plugin() -> None:
    assert frames(usage_from_metrics(llm_metrics(10, 0, 0, provider="api.groq.com", model="llama-3.3-70b")))[0][:3] == (
        "groq", "chat_completion", "llama-3.3-70b"
    )
    assert usage_from_metrics(llm_metrics(10, 0, 0, provider="127.0.0.1:8080"))[0].service == "openai"
    assert usage_from_metrics(llm_metrics(10, 0, 0, provider="myres.openai.azure.com"))[0].service == "azure_openai"
    anthropic = llm_metrics(10, 0, 0, label="livekit.plugins.anthropic.llm.LLM", provider="Anthropic")
    assert usage_from_metrics(anthropic)[0].service == "anthropic"
    unknown = llm_metrics(10, 0, 0, label="my_company.llm.LLM", provider="llm.internal:9000")
    assert usage_from_metrics(unknown)[0].service == "llm.internal"


def test_stt_streamed_seconds_batch_and_token_billed() -> None:
    assert frames(usage_from_metrics(stt_metrics(audio=4.999999999999998))) == [
        ("deepgram", "stt_streaming", STT_MODEL, "seconds", Decimal("5.000"))
    ]
    assert frames(usage_from_metrics(stt_metrics(audio=2.0005, streamed=False))) == [
        ("deepgram", "stt_prerecorded", STT_MODEL, "seconds", Decimal("2.000"))
    ]
    token_billed = stt_metrics(
        audio=3.2, label="livekit.plugins.openai.stt.STT", provider="api.openai.com",
        model="gpt-4o-transcribe", input_tokens=120, output_tokens=15, streamed=False,
    )
    assert frames(usage_from_metrics(token_billed)) == [
        ("openai", "stt_prerecorded", "gpt-4o-transcribe", "input_tokens", 120),
        ("openai", "stt_prerecorded", "gpt-4o-transcribe", "output_tokens", 15),
    ]


def test_tts_characters_or_tokens() -> None:
    assert frames(usage_from_metrics(tts_metrics(42))) == [
        ("elevenlabs", "tts_generation", "eleven_turbo_v2_5", "characters", 42)
    ]
    cartesia = tts_metrics(10, label="livekit.plugins.cartesia.tts.TTS", provider="Cartesia", model="sonic-2")
    assert frames(usage_from_metrics(cartesia))[0][:4] == ("cartesia", "tts_generation", "sonic-2", "characters")
    gpt_tts = tts_metrics(
        38, label="livekit.plugins.openai.tts.TTS", provider="api.openai.com", model="gpt-4o-mini-tts",
        input_tokens=9, output_tokens=310,
    )
    usages = usage_from_metrics(gpt_tts)
    assert frames(usages) == [
        ("openai", "tts_generation", "gpt-4o-mini-tts", "input_tokens", 9),
        ("openai", "tts_generation", "gpt-4o-mini-tts", "output_tokens", 310),
    ]
    assert usages[0].metadata["characters"] == 38 and usages[0].metadata["segment_id"] == "seg-1"


def test_realtime_tokens_by_modality_and_session_seconds() -> None:
    report = RealtimeModelMetrics(
        label="livekit.plugins.openai.realtime.realtime_model.RealtimeModel", request_id="resp_1", timestamp=NOW,
        input_tokens=1300, output_tokens=420, total_tokens=1720, session_duration=12.5,
        input_token_details=RealtimeModelMetrics.InputTokenDetails(
            text_tokens=300, audio_tokens=1000, cached_tokens=700,
            cached_tokens_details=RealtimeModelMetrics.CachedTokenDetails(text_tokens=200, audio_tokens=500),
        ),
        output_token_details=RealtimeModelMetrics.OutputTokenDetails(text_tokens=20, audio_tokens=400),
        metadata=Metadata(model_name="gpt-realtime", model_provider="api.openai.com"),
    )
    assert frames(usage_from_metrics(report)) == [
        ("openai", "realtime_text", "gpt-realtime", "input_tokens", 100),
        ("openai", "realtime_text", "gpt-realtime", "cached_input_tokens", 200),
        ("openai", "realtime_text", "gpt-realtime", "output_tokens", 20),
        ("openai", "realtime_audio", "gpt-realtime", "input_tokens", 500),
        ("openai", "realtime_audio", "gpt-realtime", "cached_input_tokens", 500),
        ("openai", "realtime_audio", "gpt-realtime", "output_tokens", 400),
        ("openai", "realtime_session", "gpt-realtime", "seconds", Decimal("12.500")),
    ]
    bare = RealtimeModelMetrics(
        label="livekit.plugins.google.realtime.RealtimeModel", request_id="r2", timestamp=NOW,
        input_tokens=50, output_tokens=5,
        input_token_details=RealtimeModelMetrics.InputTokenDetails(cached_tokens=10),
        output_token_details=RealtimeModelMetrics.OutputTokenDetails(),
        metadata=Metadata(model_name="gemini-live", model_provider="Google"),
    )
    assert frames(usage_from_metrics(bare)) == [
        ("google", "realtime", "gemini-live", "input_tokens", 40),
        ("google", "realtime", "gemini-live", "cached_input_tokens", 10),
        ("google", "realtime", "gemini-live", "output_tokens", 5),
    ]


def test_the_table_is_overridable() -> None:
    table = ServiceTable().with_overrides(
        services={"deepgram": "deepgram_eu", "llm.internal": "inhouse"},
        operations={"tts": "speech", "deepgram_eu:stt": "listen_ws"},
    )
    assert usage_from_metrics(stt_metrics(audio=1.0), table)[0].operation == "listen_ws"
    assert usage_from_metrics(stt_metrics(audio=1.0), table)[0].service == "deepgram_eu"
    assert usage_from_metrics(tts_metrics(5), table)[0].operation == "speech"
    unknown = llm_metrics(10, 0, 0, label="my_company.llm.LLM", provider="llm.internal:9000")
    assert usage_from_metrics(unknown, table)[0].service == "inhouse"
    assert DEFAULT_SERVICES["deepgram"] == "deepgram"  # the defaults are untouched
