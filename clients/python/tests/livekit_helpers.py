"""Test scaffolding for a real LiveKit `AgentSession` without a room: a scripted microphone
(`ScriptedAudioInput`) and a loudspeaker that plays instantly (`PlaybackSink`), set through the
session's public `input.audio` / `output.audio`; and metrics reports as LiveKit makes them."""

from __future__ import annotations

import asyncio
import math
import struct
from datetime import datetime, timezone

from livekit import rtc
from livekit.agents.metrics import LLMMetrics, STTMetrics, TTSMetrics, VADMetrics
from livekit.agents.metrics.base import Metadata
from livekit.agents.voice import io

SAMPLE_RATE = 16_000
FRAME_MS = 20


def utterance(speech_ms: int = 600, silence_ms: int = 500, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A spoken utterance: 100 ms of silence, a 440 Hz tone (the Deepgram stand-in hears it as
    speech), then silence (which ends the utterance), as 16-bit mono PCM."""
    lead = [0] * (100 * sample_rate // 1000)
    tone = [int(8000 * math.sin(2 * math.pi * 440 * i / sample_rate)) for i in range(speech_ms * sample_rate // 1000)]
    tail = [0] * (silence_ms * sample_rate // 1000)
    samples = lead + tone + tail
    return struct.pack(f"<{len(samples)}h", *samples)


class PlaybackSink(io.AudioOutput):
    """Where a room's audio track would be: takes the agent's audio as fast as it comes and
    reports each segment played at once (LiveKit waits for that before the next turn)."""

    def __init__(self) -> None:
        super().__init__(label="playback-sink", capabilities=io.AudioOutputCapabilities(pause=False), sample_rate=None)
        self.audio_seconds = 0.0
        #: Segments played to the end, and interrupted.
        self.played = 0
        self.interrupted = 0
        self._segment = 0.0
        self._open = False
        self._changed = asyncio.Condition()

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self._open = True
        self._segment += frame.duration
        self.audio_seconds += frame.duration

    def flush(self) -> None:
        super().flush()
        if self._open:
            self._finish(interrupted=False)

    def clear_buffer(self) -> None:
        if self._open:
            self._finish(interrupted=True)

    def _finish(self, *, interrupted: bool) -> None:
        position, self._segment, self._open = self._segment, 0.0, False
        if interrupted:
            self.interrupted += 1
        else:
            self.played += 1
        self.on_playback_finished(playback_position=position, interrupted=interrupted)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_played(self, count: int, timeout: float) -> None:
        """Until `count` segments have been played to the end (TimeoutError after `timeout` s)."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.played >= count), timeout)


class ScriptedAudioInput(io.AudioInput):
    """A microphone that says each utterance once the agent has played its reply to the one
    before (a turn-taking caller), faster than real time; then it stays silent, sending nothing."""

    def __init__(self, utterances: list[bytes], sink: PlaybackSink, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__(label="scripted-microphone")
        self._utterances = list(utterances)
        self._sink = sink
        self._rate = sample_rate
        self._frame_bytes = FRAME_MS * sample_rate // 1000 * 2
        self._index = 0
        self._offset = 0
        #: Bytes of audio handed to the session.
        self.bytes_sent = 0
        #: Set once every utterance has been handed over.
        self.finished = asyncio.Event()

    async def __anext__(self) -> rtc.AudioFrame:
        while self._index < len(self._utterances) and self._offset >= len(self._utterances[self._index]):
            self._index += 1
            self._offset = 0
        if self._index >= len(self._utterances):
            self.finished.set()
            await asyncio.Event().wait()  # an idle microphone: nothing more until the session ends
        if self._offset == 0 and self._index > 0:
            await self._sink.wait_played(self._index, timeout=30)
        audio = self._utterances[self._index]
        chunk = audio[self._offset : self._offset + self._frame_bytes]
        self._offset += len(chunk)
        self.bytes_sent += len(chunk)
        await asyncio.sleep(0)
        return rtc.AudioFrame(chunk, self._rate, 1, len(chunk) // 2)


LLM_MODEL, STT_MODEL, TTS_MODEL = "gpt-4.1-mini", "nova-3", "tts-1"
#: When the reports were made: now, so no test depends on a date.
NOW = datetime.now(timezone.utc).timestamp()


def llm_metrics(
    prompt: int, cached: int, completion: int, *, label: str = "livekit.plugins.openai.llm.LLM",
    provider: str = "api.openai.com", model: str = LLM_MODEL, request_id: str = "chatcmpl-1",
) -> LLMMetrics:
    return LLMMetrics(
        label=label, request_id=request_id, timestamp=NOW, duration=0.5, ttft=0.1, cancelled=False,
        completion_tokens=completion, prompt_tokens=prompt, prompt_cached_tokens=cached,
        total_tokens=prompt + completion, tokens_per_second=30.0,
        metadata=Metadata(model_name=model, model_provider=provider),
    )


def stt_metrics(
    audio: float, *, request_id: str = "dg-1", timestamp: float = 0.0, streamed: bool = True,
    label: str = "livekit.plugins.deepgram.stt.STT", provider: str = "Deepgram", model: str = STT_MODEL,
    input_tokens: int = 0, output_tokens: int = 0,
) -> STTMetrics:
    return STTMetrics(
        label=label, request_id=request_id, timestamp=NOW + timestamp, duration=0.0, audio_duration=audio,
        streamed=streamed, input_tokens=input_tokens, output_tokens=output_tokens,
        metadata=Metadata(model_name=model, model_provider=provider),
    )


def tts_metrics(
    characters: int, *, label: str = "livekit.plugins.elevenlabs.tts.TTS", provider: str = "ElevenLabs",
    model: str = "eleven_turbo_v2_5", input_tokens: int = 0, output_tokens: int = 0,
) -> TTSMetrics:
    return TTSMetrics(
        label=label, request_id="tts-1", timestamp=NOW, ttfb=0.1, duration=0.3, audio_duration=1.5,
        cancelled=False, characters_count=characters, input_tokens=input_tokens, output_tokens=output_tokens,
        streamed=True, segment_id="seg-1", metadata=Metadata(model_name=model, model_provider=provider),
    )


def vad_metrics() -> VADMetrics:
    return VADMetrics(label="vad", timestamp=NOW, idle_time=0.0, inference_duration_total=0.1, inference_count=3)
