"""A stand-in for Deepgram's live transcription WebSocket (`/v1/listen`), on loopback.

It takes what a Deepgram streaming client sends — binary audio (`encoding=linear16`, the
`sample_rate` and `channels` of the query) and the JSON control messages `KeepAlive`,
`Finalize` and `CloseStream` — and answers like Deepgram: `Results` messages (interim ones
when `interim_results=true`, then a final one with `is_final` and `speech_final` per
utterance), a final `Results` with `from_finalize` for a `Finalize`, and a `Metadata`
message before it closes on `CloseStream`. It keeps a log of what it would bill: one
`ListenSession` per connection with the bytes of audio received, which is what Deepgram's
streaming price is per (audio duration streamed, silence included).

```python
async with DeepgramStandin(transcripts=["what's the weather", "thanks"]) as deepgram:
    # pipecat: DeepgramSTTService(api_key="dg-test", base_url=deepgram.ws_url)
    # any client: ws://127.0.0.1:PORT/v1/listen?encoding=linear16&sample_rate=16000&channels=1
    ...
    await deepgram.wait_idle()          # every session closed: the log is complete
    deepgram.sessions[0].audio_seconds  # Decimal, exact: bytes / (2 * sample_rate * channels)
    deepgram.total_audio_seconds()
```

Utterances are found in the audio itself, not by the clock: a sample whose magnitude is over
`speech_threshold` is speech; an utterance ends after `endpointing_ms` of audio without speech
(the stand-in's own endpointing: the query's `endpointing` is logged, not applied). Each
utterance is given the next of `transcripts` in order (over all sessions); past the last it is
transcribed as "hello". Scripted test audio is therefore tone bursts separated by silence.
"""

from __future__ import annotations

import array
import hashlib
import json
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from aiohttp import WSMsgType, web

from ._base import StandinServer, bearer_token

MODEL_UUID = "1dbdfb4d-85b2-4659-9831-16b3c76229aa"


@dataclass
class ListenSession:
    """One `/v1/listen` connection, as the stand-in billed it."""

    request_id: str
    #: The query string of the connection (model, encoding, sample_rate, …), as sent.
    params: dict[str, str]
    sample_rate: int
    channels: int
    model: str
    #: Bytes of audio received.
    audio_bytes: int = 0
    #: Transcripts of the final results sent, in order (empty finals are not listed).
    transcripts: list[str] = field(default_factory=list)
    #: Interim transcripts sent.
    interims: list[str] = field(default_factory=list)
    #: The control messages received, by type, in order (`KeepAlive`, `Finalize`, `CloseStream`).
    controls: list[str] = field(default_factory=list)
    closed: bool = False

    @property
    def audio_seconds(self) -> Decimal:
        """Seconds of audio received: what Deepgram bills a stream for (exact)."""
        return Decimal(self.audio_bytes) / Decimal(2 * self.sample_rate * self.channels)


class DeepgramStandin(StandinServer):
    """`/v1/listen` like Deepgram's live transcription; see the module's docstring.

    `api_key`: when given, other keys are refused at the handshake with 401 like Deepgram's;
    otherwise any `Authorization: Token …` (or `Bearer …`) is taken, and a missing one refused.
    """

    def __init__(
        self,
        transcripts: Sequence[str] = (),
        *,
        api_key: str | None = None,
        endpointing_ms: int = 300,
        speech_threshold: int = 1000,
        interim_after_ms: int = 200,
    ) -> None:
        super().__init__()
        self._transcripts = list(transcripts)
        self._api_key = api_key
        self._endpointing_ms = endpointing_ms
        self._speech_threshold = speech_threshold
        self._interim_after_ms = interim_after_ms
        #: Every connection, in the order they were opened.
        self.sessions: list[ListenSession] = []

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/listen", self._listen)

    def total_audio_seconds(self) -> Decimal:
        """Seconds of audio received over all sessions."""
        return sum((session.audio_seconds for session in self.sessions), Decimal(0))

    def _next_transcript(self, peek: bool = False) -> str:
        if not self._transcripts:
            return "hello"
        return self._transcripts[0] if peek else self._transcripts.pop(0)

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        key = bearer_token(request)
        if key is None or (self._api_key is not None and key != self._api_key):
            self.refusals.append("GET /v1/listen: invalid credentials")
            return web.json_response(
                {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.", "request_id": str(uuid.uuid4())},
                status=401,
            )
        params = dict(request.query)
        if params.get("encoding", "linear16") != "linear16":
            self.refusals.append(f"GET /v1/listen: encoding {params.get('encoding')}")
            return web.json_response(
                {"err_code": "Bad Request", "err_msg": "the stand-in takes encoding=linear16 only"}, status=400
            )
        try:
            sample_rate = int(params.get("sample_rate", "16000"))
            channels = int(params.get("channels", "1"))
        except ValueError:
            return web.json_response({"err_code": "Bad Request", "err_msg": "bad sample_rate"}, status=400)
        session = ListenSession(
            request_id=str(uuid.uuid4()), params=params, sample_rate=sample_rate, channels=channels,
            model=params.get("model", "base"),
        )
        self.sessions.append(session)
        socket = web.WebSocketResponse(heartbeat=None)
        await socket.prepare(request)
        await self._begin()
        try:
            await _Transcriber(self, session, socket).run()
        finally:
            session.closed = True
            await self._done()
        return socket


class _Transcriber:
    """One session's endpointing over the received audio, and its answers."""

    def __init__(self, standin: DeepgramStandin, session: ListenSession, socket: web.WebSocketResponse) -> None:
        self.standin = standin
        self.session = session
        self.socket = socket
        self.rate = session.sample_rate
        self.endpoint = standin._endpointing_ms * self.rate // 1000
        self.interim_after = standin._interim_after_ms * self.rate // 1000
        self.interim = session.params.get("interim_results", "false").lower() == "true"
        self.position = 0  # frames (samples per channel) received so far
        self.speech_start: int | None = None
        self.last_voiced = 0
        self.interim_sent = False
        self.leftover = b""
        self.digest = hashlib.sha256()

    async def run(self) -> None:
        async for message in self.socket:
            if message.type == WSMsgType.BINARY:
                await self._audio(message.data)
            elif message.type == WSMsgType.TEXT:
                try:
                    control = json.loads(message.data)
                except ValueError:
                    continue
                kind = str(control.get("type", "")) if isinstance(control, dict) else ""
                self.session.controls.append(kind)
                if kind == "Finalize":
                    await self._final(from_finalize=True, speech_final=False)
                elif kind == "CloseStream":
                    await self._final(from_finalize=False, speech_final=False, empty_ok=False)
                    await self._metadata()
                    await self.socket.close()
                    return
            elif message.type in (WSMsgType.ERROR, WSMsgType.CLOSE, WSMsgType.CLOSING):
                return

    async def _audio(self, data: bytes) -> None:
        self.session.audio_bytes += len(data)
        self.digest.update(data)
        data = self.leftover + data
        usable = len(data) - len(data) % (2 * self.session.channels)
        self.leftover = data[usable:]
        samples = array.array("h")
        samples.frombytes(data[:usable])
        if sys.byteorder == "big":
            samples.byteswap()
        channels = self.session.channels
        threshold = self.standin._speech_threshold
        for index in range(0, len(samples), channels):
            frame = self.position
            self.position += 1
            if abs(samples[index]) > threshold:
                if self.speech_start is None:
                    self.speech_start = frame
                    self.interim_sent = False
                self.last_voiced = frame
            elif self.speech_start is not None and frame - self.last_voiced >= self.endpoint:
                await self._final(from_finalize=False, speech_final=True)
            if (
                self.interim
                and self.speech_start is not None
                and not self.interim_sent
                and frame - self.speech_start >= self.interim_after
            ):
                self.interim_sent = True
                words = self.standin._next_transcript(peek=True).split()
                partial = words[0] if words else ""
                self.session.interims.append(partial)
                await self._results(partial, self.speech_start, frame, is_final=False, speech_final=False,
                                    from_finalize=False)

    async def _final(self, *, from_finalize: bool, speech_final: bool, empty_ok: bool = True) -> None:
        if self.speech_start is None:
            if empty_ok:
                await self._results("", self.position, self.position, is_final=True, speech_final=speech_final,
                                    from_finalize=from_finalize)
            return
        start, end = self.speech_start, self.last_voiced + 1
        self.speech_start = None
        transcript = self.standin._next_transcript()
        self.session.transcripts.append(transcript)
        await self._results(transcript, start, end, is_final=True, speech_final=speech_final,
                            from_finalize=from_finalize)

    async def _results(
        self, transcript: str, start: int, end: int, *, is_final: bool, speech_final: bool, from_finalize: bool
    ) -> None:
        seconds_start, seconds_end = start / self.rate, end / self.rate
        words = transcript.split()
        step = (seconds_end - seconds_start) / max(len(words), 1)
        message: dict[str, Any] = {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(seconds_end - seconds_start, 3),
            "start": round(seconds_start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {
                        "transcript": transcript,
                        "confidence": 0.99 if words else 0.0,
                        "words": [
                            {"word": word.lower().strip(".,?!"), "start": round(seconds_start + i * step, 3),
                             "end": round(seconds_start + (i + 1) * step, 3), "confidence": 0.99,
                             "punctuated_word": word}
                            for i, word in enumerate(words)
                        ],
                    }
                ]
            },
            "metadata": {
                "request_id": self.session.request_id,
                "model_info": {"name": self.session.model, "version": "standin", "arch": "standin"},
                "model_uuid": MODEL_UUID,
            },
        }
        await self._send(message)

    async def _metadata(self) -> None:
        await self._send(
            {
                "type": "Metadata",
                "transaction_key": "deprecated",
                "request_id": self.session.request_id,
                "sha256": self.digest.hexdigest(),
                "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "duration": float(self.session.audio_seconds),
                "channels": self.session.channels,
                "models": [MODEL_UUID],
                "model_info": {MODEL_UUID: {"name": self.session.model, "version": "standin", "arch": "standin"}},
            }
        )

    async def _send(self, message: dict[str, Any]) -> None:
        if self.socket.closed:
            return
        try:
            await self.socket.send_str(json.dumps(message))
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away; what it was sent is what it got
