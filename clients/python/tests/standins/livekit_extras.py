"""A stand-in for OpenAI's speech API as its token-billed models answer it, on loopback.

`POST /v1/audio/speech` with `stream_format: "sse"` (what clients ask of `gpt-4o-mini-tts`) is
answered like OpenAI's: Server-Sent Events, `speech.audio.delta` events carrying base64 PCM
(24 kHz, 16-bit mono) and a last `speech.audio.done` event with the usage
(`input_tokens` of text, `output_tokens` of audio). Without it (`tts-1`, `stream_format: "audio"`)
the raw PCM is sent, billed per character. The log, one `TokenSpeechRequest` per answered
request, holds what was billed.

Tokens follow a deterministic rule, not OpenAI's tokenizer: input tokens are
`openai_standin.count_tokens(input)`, output tokens one per 20 ms of audio (rounded up).

```python
async with TokenSpeechStandin() as speech:
    # livekit: openai.TTS(model="gpt-4o-mini-tts", base_url=speech.url + "/v1", response_format="pcm")
    ...
    await speech.wait_idle()
    speech.requests[0].input_tokens, speech.requests[0].output_tokens
```
"""

from __future__ import annotations

import base64
import json
import math
import struct
from dataclasses import dataclass

from aiohttp import web

from ._base import StandinServer, openai_request_body
from .openai_standin import count_tokens

SAMPLE_RATE = 24_000
AUDIO_MS_PER_TOKEN = 20


@dataclass(frozen=True)
class TokenSpeechRequest:
    """One answered speech request, as the stand-in billed it."""

    model: str
    input: str
    #: `sse` (token-billed, usage sent at the end) or `audio` (raw audio, billed per character).
    stream_format: str
    input_tokens: int
    output_tokens: int
    #: Whether the answer was sent to the end (for `sse`: the usage event included).
    complete: bool

    @property
    def characters(self) -> int:
        return len(self.input)


class TokenSpeechStandin(StandinServer):
    """`POST /v1/audio/speech` like OpenAI's, SSE with token usage or raw PCM; see the module.

    `ms_per_character`: audio length per character of input. `api_key`: when given, other keys
    are refused with 401; otherwise any `Bearer` key is taken (a missing one is refused).
    """

    def __init__(self, *, api_key: str | None = None, ms_per_character: int = 5, chunk_bytes: int = 4800) -> None:
        super().__init__()
        self._api_key = api_key
        self._ms_per_character = ms_per_character
        self._chunk_bytes = chunk_bytes
        #: Every answered request, in the order they were answered.
        self.requests: list[TokenSpeechRequest] = []

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/speech", self._speech)

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await openai_request_body(request, self._api_key, self.refusals, ("input", "model"))
        if isinstance(body, web.Response):
            return body
        text, model = str(body["input"]), str(body["model"])
        if str(body.get("response_format", "mp3")) != "pcm":
            self.refusals.append(f"POST /v1/audio/speech: response_format {body.get('response_format')}")
            return web.json_response(
                {"error": {"message": "the stand-in answers response_format pcm only",
                           "type": "invalid_request_error", "param": "response_format"}},
                status=400,
            )
        stream_format = "sse" if body.get("stream_format") == "sse" else "audio"
        frames = len(text) * self._ms_per_character * SAMPLE_RATE // 1000
        audio = b"".join(
            struct.pack("<h", int(3000 * math.sin(2 * math.pi * 220 * i / SAMPLE_RATE))) for i in range(frames)
        )
        audio_ms = frames * 1000 // SAMPLE_RATE
        input_tokens = count_tokens(text) if stream_format == "sse" else 0
        output_tokens = math.ceil(audio_ms / AUDIO_MS_PER_TOKEN) if stream_format == "sse" else 0
        await self._begin()
        complete = False
        try:
            if stream_format == "sse":
                response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "x-request-id": "req_sse"})
            else:
                response = web.StreamResponse(headers={"Content-Type": "audio/pcm", "x-request-id": "req_pcm"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            try:
                for offset in range(0, len(audio), self._chunk_bytes):
                    piece = audio[offset : offset + self._chunk_bytes]
                    if stream_format == "sse":
                        event = {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()}
                        await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                    else:
                        await response.write(piece)
                if stream_format == "sse":
                    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens,
                             "total_tokens": input_tokens + output_tokens}
                    done = {"type": "speech.audio.done", "usage": usage}
                    await response.write(b"data: " + json.dumps(done).encode() + b"\n\n")
                await response.write_eof()
                complete = True
            except (ConnectionResetError, ConnectionError):
                pass  # the client went away: what it was sent is what it got
            return response
        finally:
            self.requests.append(
                TokenSpeechRequest(model=model, input=text, stream_format=stream_format, input_tokens=input_tokens,
                                   output_tokens=output_tokens, complete=complete)
            )
            await self._done()
