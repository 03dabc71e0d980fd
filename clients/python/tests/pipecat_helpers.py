"""Test scaffolding for a real Pipecat pipeline without a transport: scripted audio in, a
transcript-to-LLM step, a reply collector, and an output sink that tells when a turn is over."""

from __future__ import annotations

import asyncio
import math
import struct
from typing import Any

from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

SAMPLE_RATE = 16_000
CHUNK_MS = 20


def utterance(speech_ms: int = 400, silence_ms: int = 500, sample_rate: int = SAMPLE_RATE) -> list[InputAudioRawFrame]:
    """A spoken utterance as a transport would deliver it: a 440 Hz tone, then silence, in 20 ms
    chunks of 16-bit mono PCM (the Deepgram stand-in hears the tone as speech)."""
    samples = [int(8000 * math.sin(2 * math.pi * 440 * i / sample_rate)) for i in range(speech_ms * sample_rate // 1000)]
    samples += [0] * (silence_ms * sample_rate // 1000)
    audio = struct.pack(f"<{len(samples)}h", *samples)
    chunk = CHUNK_MS * sample_rate // 1000 * 2
    return [
        InputAudioRawFrame(audio=audio[offset : offset + chunk], sample_rate=sample_rate, num_channels=1)
        for offset in range(0, len(audio), chunk)
    ]


class TranscriptToLLM(FrameProcessor):
    """Adds each final transcript to the conversation as the user's message and asks the LLM."""

    def __init__(self, context: LLMContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.context = context

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            self.context.add_message({"role": "user", "content": frame.text})
            await self.push_frame(LLMContextFrame(context=self.context), direction)
        else:
            await self.push_frame(frame, direction)


class ReplyCollector(FrameProcessor):
    """Adds the LLM's streamed reply to the conversation as the assistant's message."""

    def __init__(self, context: LLMContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.context = context
        self._reply: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            self._reply.append(frame.text)
        elif isinstance(frame, LLMFullResponseEndFrame):
            self.context.add_message({"role": "assistant", "content": "".join(self._reply)})
            self._reply = []
        await self.push_frame(frame, direction)


class OutputSink(FrameProcessor):
    """The end of the pipeline, where a transport's output would be: counts the audio it would
    play, and tells when each bot reply is over (`turns`) and when an EndFrame arrived."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.turns: asyncio.Queue[None] = asyncio.Queue()
        self.audio_bytes = 0
        self.end_frames: list[EndFrame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.audio_bytes += len(frame.audio)
        elif isinstance(frame, LLMFullResponseEndFrame):
            self.turns.put_nowait(None)
        elif isinstance(frame, EndFrame):
            self.end_frames.append(frame)
        await self.push_frame(frame, direction)
