"""What every stand-in shares: an aiohttp server on 127.0.0.1, on a port the kernel picks."""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType
from typing import Any, Self

from aiohttp import web


class StandinServer:
    """An aiohttp application served on 127.0.0.1 on an ephemeral port.

    Subclasses add their routes in `_routes`. Use it as `async with Server() as server:` or call
    `await server.start()` / `await server.stop()`; `server.url` is `http://127.0.0.1:PORT` once
    started (`server.ws_url` the same with `ws://`). It runs on the caller's event loop: a test
    that reads a stand-in's log after awaiting the framework under test sees every request the
    stand-in has answered so far.
    """

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.port = 0
        #: Requests refused (authentication, malformed bodies), as "METHOD PATH: reason".
        self.refusals: list[str] = []
        self._activity = asyncio.Condition()
        self._in_flight = 0

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`, the stand-in's base URL."""
        if not self.port:
            raise RuntimeError("the stand-in is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """`ws://127.0.0.1:PORT`, for clients that take a WebSocket base URL."""
        return self.url.replace("http://", "ws://", 1)

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        self._routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # Requests in flight: a test waits for them to finish before it reads the log.

    async def _begin(self) -> None:
        async with self._activity:
            self._in_flight += 1

    async def _done(self) -> None:
        async with self._activity:
            self._in_flight -= 1
            self._activity.notify_all()

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Return once no request or WebSocket session is being answered (raises TimeoutError
        after `timeout` seconds): then the log holds everything the stand-in answered."""
        async with self._activity:
            await asyncio.wait_for(self._activity.wait_for(lambda: self._in_flight == 0), timeout)


def bearer_token(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer TOKEN` (or Deepgram's `Token TOKEN`), if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() in ("bearer", "token") and token.strip():
        return token.strip()
    return None


async def openai_request_body(
    request: web.Request, api_key: str | None, refusals: list[str], required: tuple[str, ...]
) -> dict[str, Any] | web.Response:
    """The JSON body of an OpenAI-style request with its `required` members, or the error OpenAI
    answers: 401 for a missing or wrong key (`api_key`: the one accepted; `None`: any), 400 for
    a body that is not JSON or lacks a member. Each refusal is logged in `refusals`."""
    route = f"{request.method} {request.path}"
    key = bearer_token(request)
    if key is None or (api_key is not None and key != api_key):
        refusals.append(f"{route}: invalid api key")
        return web.json_response(
            {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                       "param": None, "code": "invalid_api_key"}},
            status=401,
        )
    try:
        body = await request.json()
        missing = [name for name in required if name not in body]
        if missing:
            raise KeyError(missing[0])
    except (ValueError, KeyError, TypeError) as error:
        refusals.append(f"{route}: {error!r}")
        return web.json_response(
            {"error": {"message": f"invalid body: {error}", "type": "invalid_request_error", "param": None, "code": None}},
            status=400,
        )
    return dict(body)
