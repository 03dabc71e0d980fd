"""A stand-in for OpenAI's Chat Completions API (`POST /v1/chat/completions`), on loopback.

It answers like the real API, streamed (Server-Sent Events, `stream_options.include_usage` adds
the final usage chunk) or not, with usage that includes `prompt_tokens_details.cached_tokens`,
and keeps its own log of what it billed, one `ChatRequest` per answered request.

```python
async with OpenAIStandin(replies=["Hello there.", "Goodbye."]) as openai:
    client = AsyncOpenAI(api_key="sk-test", base_url=openai.url + "/v1")
    ...
    await openai.wait_idle()
    openai.requests[0].prompt_tokens, openai.requests[0].cached_tokens, openai.totals()
```

Tokens are counted by a simple deterministic rule (not OpenAI's tokenizer): a token is a run of
word characters or one punctuation character. A prompt is, per message, one `<|role|>` token
followed by the tokens of its text content (tools, when given, count as the tokens of their
JSON, first). The prompt cache works like OpenAI's automatic prefix cache, scaled down: the
cached part of a prompt is its longest common prefix with an earlier prompt to the same model,
rounded down to a multiple of `cache_block` tokens, and nothing when that prefix is shorter than
`cache_min_tokens` (OpenAI: 1024 and 128; here 16 and 8 by default, so short test
conversations hit the cache). `cached_tokens` is part of `prompt_tokens`, as in OpenAI's usage.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ._base import StandinServer, openai_request_body

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """The stand-in's token count of TEXT: runs of word characters and single punctuation marks."""
    return len(_TOKEN.findall(text))


def _text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return str(content)


def prompt_tokens_of(messages: Sequence[dict[str, Any]], tools: Any = None) -> list[str]:
    """The prompt's token sequence, as the stand-in counts and caches it."""
    sequence: list[str] = []
    if tools:
        sequence += _TOKEN.findall(json.dumps(tools, sort_keys=True))
    for message in messages:
        sequence.append(f"<|{message.get('role', '')}|>")
        sequence += _TOKEN.findall(_text_of(message.get("content")))
    return sequence


@dataclass(frozen=True)
class ChatRequest:
    """One answered chat completion, as the stand-in billed it."""

    id: str
    model: str
    stream: bool
    messages: list[dict[str, Any]]
    reply: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    #: Whether the usage was sent (always for a non-streamed answer; for a streamed one only when
    #: the client asked for it with `stream_options.include_usage` and the stream was not cut).
    usage_sent: bool

    @property
    def uncached_prompt_tokens(self) -> int:
        """Prompt tokens billed at the full input rate."""
        return self.prompt_tokens - self.cached_tokens

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""


class OpenAIStandin(StandinServer):
    """`POST /v1/chat/completions` like OpenAI's, answering from a script.

    `replies`: the answers, in order; past the last (or with none) it answers
    "You said: <the last user message>.". `api_key`: when given, other keys are refused with
    401 like OpenAI's; any `Bearer` key is taken otherwise (a missing one is refused).
    The stream is sent word by word, as fast as the client reads it.
    """

    def __init__(
        self,
        replies: Sequence[str] = (),
        *,
        api_key: str | None = None,
        cache_min_tokens: int = 16,
        cache_block: int = 8,
    ) -> None:
        super().__init__()
        self._replies = list(replies)
        self._api_key = api_key
        self._cache_min_tokens = cache_min_tokens
        self._cache_block = cache_block
        self._prompts: dict[str, list[list[str]]] = {}
        self._ids = itertools.count(1)
        #: Every answered request, in the order they were answered.
        self.requests: list[ChatRequest] = []

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._completions)

    def totals(self) -> dict[str, int]:
        """What was billed over all requests whose usage was sent: `uncached_input_tokens`,
        `cached_input_tokens`, `output_tokens`."""
        billed = [request for request in self.requests if request.usage_sent]
        return {
            "uncached_input_tokens": sum(request.uncached_prompt_tokens for request in billed),
            "cached_input_tokens": sum(request.cached_tokens for request in billed),
            "output_tokens": sum(request.completion_tokens for request in billed),
        }

    def _cached(self, model: str, prompt: list[str]) -> int:
        longest = 0
        for earlier in self._prompts.get(model, []):
            common = 0
            for mine, theirs in zip(prompt, earlier):
                if mine != theirs:
                    break
                common += 1
            longest = max(longest, common)
        if longest < self._cache_min_tokens:
            return 0
        return longest - longest % self._cache_block

    def _reply_to(self, messages: list[dict[str, Any]]) -> str:
        if self._replies:
            return self._replies.pop(0)
        last = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        return f"You said: {last.strip()}."

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await openai_request_body(request, self._api_key, self.refusals, ("model", "messages"))
        if isinstance(body, web.Response):
            return body
        model, messages = str(body["model"]), list(body["messages"])
        await self._begin()
        try:
            return await self._answer(request, body, model, messages)
        finally:
            await self._done()

    async def _answer(
        self, request: web.Request, body: dict[str, Any], model: str, messages: list[dict[str, Any]]
    ) -> web.StreamResponse:
        completion_id = f"chatcmpl-standin{next(self._ids)}"
        created = int(time.time())
        prompt = prompt_tokens_of(messages, body.get("tools"))
        cached = self._cached(model, prompt)
        self._prompts.setdefault(model, []).append(prompt)
        reply = self._reply_to(messages)
        usage = {
            "prompt_tokens": len(prompt),
            "completion_tokens": count_tokens(reply),
            "total_tokens": len(prompt) + count_tokens(reply),
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
            },
        }

        def log(usage_sent: bool) -> None:
            self.requests.append(
                ChatRequest(
                    id=completion_id, model=model, stream=bool(body.get("stream")), messages=messages,
                    reply=reply, prompt_tokens=len(prompt), cached_tokens=cached,
                    completion_tokens=count_tokens(reply), usage_sent=usage_sent,
                )
            )

        if not body.get("stream"):
            log(True)
            return web.json_response(
                {
                    "id": completion_id, "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply, "refusal": None},
                                 "logprobs": None, "finish_reason": "stop"}],
                    "usage": usage, "service_tier": "default", "system_fingerprint": "fp_standin",
                }
            )

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            data: dict[str, Any] = {
                "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_standin",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                data["usage"] = None
            return data

        usage_sent = False
        try:
            await _event(response, chunk({"role": "assistant", "content": "", "refusal": None}, None))
            for piece in re.findall(r"\S+\s*", reply):
                await _event(response, chunk({"content": piece}, None))
            await _event(response, chunk({}, "stop"))
            if include_usage:
                await _event(
                    response,
                    {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                     "system_fingerprint": "fp_standin", "choices": [], "usage": usage},
                )
                usage_sent = True
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away: what it was sent is what it got
        finally:
            log(usage_sent)
        return response


async def _event(response: web.StreamResponse, data: dict[str, Any]) -> None:
    await response.write(b"data: " + json.dumps(data).encode() + b"\n\n")
