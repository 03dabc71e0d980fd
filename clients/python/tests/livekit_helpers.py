"""Test scaffolding for a real LiveKit `AgentSession` without a room: a scripted microphone
(`ScriptedAudioInput`) and a loudspeaker that plays instantly (`PlaybackSink`), set through the
session's public `input.audio` / `output.audio`."""

from __future__ import annotations

import asyncio
import math
import struct

from livekit import rtc
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
