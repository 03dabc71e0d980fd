"""A stand-in for OpenAI's speech API (`POST /v1/audio/speech`), on loopback.

It answers like OpenAI's text-to-speech: the audio of `input`, streamed (chunked), as raw
16-bit little-endian mono PCM at 24 kHz for `response_format: "pcm"` or the same in a WAV
container for `"wav"` (compressed formats are refused with 400: the stand-in has no encoder).
The audio is a quiet tone, `ms_per_character` long per character of input. It keeps a log of
what it billed, one `SpeechRequest` per answered request: TTS is billed per character of
`input` (len() of the text, in Unicode code points).

```python
async with TTSStandin() as tts:
    # pipecat: OpenAITTSService(api_key="sk-test", base_url=tts.url + "/v1")
    ...
    await tts.wait_idle()
    tts.requests[0].characters, tts.total_characters()
```
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from aiohttp import web

from ._base import StandinServer, openai_request_body

SAMPLE_RATE = 24_000


@dataclass(frozen=True)
class SpeechRequest:
    """One answered `/v1/audio/speech` request, as the stand-in billed it."""

    model: str
    voice: str
    input: str
    response_format: str
    #: Bytes of audio sent (the WAV header not counted).
    audio_bytes: int
    #: Whether the whole audio was sent (the client did not go away first).
    complete: bool

    @property
    def characters(self) -> int:
        """Billed characters: the length of `input`."""
        return len(self.input)


class TTSStandin(StandinServer):
    """`POST /v1/audio/speech` like OpenAI's; see the module's docstring.

    `api_key`: when given, other keys are refused with 401; otherwise any `Bearer` key is taken
    (a missing one is refused).
    """

    def __init__(self, *, api_key: str | None = None, ms_per_character: int = 5, chunk_bytes: int = 4800) -> None:
        super().__init__()
        self._api_key = api_key
        self._ms_per_character = ms_per_character
        self._chunk_bytes = chunk_bytes
        #: Every answered request, in the order they were answered.
        self.requests: list[SpeechRequest] = []

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/speech", self._speech)

    def total_characters(self) -> int:
        """Characters billed over all requests."""
        return sum(request.characters for request in self.requests)

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await openai_request_body(request, self._api_key, self.refusals, ("input", "model"))
        if isinstance(body, web.Response):
            return body
        text, model, voice = str(body["input"]), str(body["model"]), str(body.get("voice", ""))
        response_format = str(body.get("response_format", "mp3"))
        if response_format not in ("pcm", "wav"):
            self.refusals.append(f"POST /v1/audio/speech: response_format {response_format}")
            return web.json_response(
                {"error": {"message": f"the stand-in answers pcm or wav, not {response_format}",
                           "type": "invalid_request_error", "param": "response_format"}},
                status=400,
            )
        await self._begin()
        try:
            return await self._answer(request, text, model, voice, response_format)
        finally:
            await self._done()

    async def _answer(
        self, request: web.Request, text: str, model: str, voice: str, response_format: str
    ) -> web.StreamResponse:
        frames = len(text) * self._ms_per_character * SAMPLE_RATE // 1000
        audio = b"".join(
            struct.pack("<h", int(3000 * math.sin(2 * math.pi * 220 * i / SAMPLE_RATE))) for i in range(frames)
        )
        content_type = "audio/pcm" if response_format == "pcm" else "audio/wav"
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent = 0
        complete = False
        try:
            if response_format == "wav":
                await response.write(_wav_header(len(audio)))
            for offset in range(0, len(audio), self._chunk_bytes):
                piece = audio[offset : offset + self._chunk_bytes]
                await response.write(piece)
                sent += len(piece)
            await response.write_eof()
            complete = True
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.requests.append(
                SpeechRequest(model=model, voice=voice, input=text, response_format=response_format,
                              audio_bytes=sent, complete=complete)
            )
        return response


def _wav_header(data_bytes: int) -> bytes:
    return (
        b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
        + b"data" + struct.pack("<I", data_bytes)
    )
