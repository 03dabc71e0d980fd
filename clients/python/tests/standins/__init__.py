"""Loopback stand-ins for the providers a voice pipeline calls, for offline tests.

Each is an aiohttp server on 127.0.0.1 on an ephemeral port, runs on the test's event loop, and
keeps its own log of what it billed. They do not depend on any voice framework:

- `OpenAIStandin` (openai_standin.py): `POST /v1/chat/completions`, streamed or not, with usage
  incl. `prompt_tokens_details.cached_tokens`; log `requests: list[ChatRequest]`, `totals()`.
- `DeepgramStandin` (deepgram_standin.py): the `/v1/listen` streaming WebSocket; log
  `sessions: list[ListenSession]` (bytes / seconds of audio received), `total_audio_seconds()`.
- `TTSStandin` (tts_standin.py): `POST /v1/audio/speech` returning PCM or WAV; log
  `requests: list[SpeechRequest]` (characters), `total_characters()`.

```python
async with OpenAIStandin(replies=["Hi."]) as openai, DeepgramStandin(["hello"]) as deepgram:
    ...                       # point the clients at openai.url + "/v1", deepgram.ws_url
    await openai.wait_idle()  # every answer finished: the log is complete
```
"""

from ._base import StandinServer
from .deepgram_standin import DeepgramStandin, ListenSession
from .openai_standin import ChatRequest, OpenAIStandin, count_tokens
from .tts_standin import SpeechRequest, TTSStandin

__all__ = [
    "ChatRequest",
    "DeepgramStandin",
    "ListenSession",
    "OpenAIStandin",
    "SpeechRequest",
    "StandinServer",
    "TTSStandin",
    "count_tokens",
]
