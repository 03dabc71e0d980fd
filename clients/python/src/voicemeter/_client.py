"""The VoiceMeter client: one WebSocket carrying many calls, every frame kept until acknowledged.

Lifecycle of a frame: `Call.usage` checks it, gives it the call's next seq and keeps it (waiting
only while the client's buffer of unacknowledged frames is full). Each call has one sender at a
time (`Call._flush`) that sends, in order, on the current connection: the call's `call.start`,
every kept frame not yet sent on that connection, then `call.end` once the call is ending, so
nothing of a call ever follows its `call.end`. An `ack` for seq N (cumulative) releases the
call's frames up to N. A frame refused transiently (`overloaded`, `rate_limited`) is sent again
after a growing jittered delay; one refused for good is recorded in `Call.refused`. When the
connection drops, the client reconnects with exponential backoff and full jitter, and every
live call's sender starts over on the new connection (the server resumes the call and
acknowledges what it holds). `(call_id, seq)` is the server's idempotency key: a resend is
never counted twice. Messages are paced below the server's per-connection rate limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, Unpack

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from ._call import Call
from ._events import AuthenticationFailed, CallRejected, VoiceMeterError
from ._messages import CallDetails, start_message

logger = logging.getLogger("voicemeter")

#: A connection that lived this long was a success: the reconnect backoff starts over.
_STABLE_CONNECTION_SECONDS = 10.0


class _Pacer:
    """A token bucket: at most `rate` messages a second after a burst of `rate`, so the client
    stays under the server's per-connection limit (default 500/s, bursts of 1,000)."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._tokens = rate
        self._updated = time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self._rate, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self._rate)


class VoiceMeter:
    """A connection to a VoiceMeter server that carries any number of calls.

    `buffer_frames` bounds the unacknowledged frames kept over all calls (`Call.usage` waits
    while it is full); `settle_timeout` bounds how long ending a call waits for its acks and
    summary, in seconds; `start_timeout` how long `call.start` waits for its answer;
    `messages_per_second` paces what is sent (keep it below the server's
    `messages-per-second`, 500 by default).
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        buffer_frames: int = 10_000,
        start_timeout: float = 30.0,
        settle_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        reconnect_delay_first: float = 0.1,
        reconnect_delay_max: float = 5.0,
        messages_per_second: float = 400.0,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"url must start with ws:// or wss://, got {url!r}")
        if buffer_frames < 1 or messages_per_second <= 0:
            raise ValueError("buffer_frames and messages_per_second must be positive")
        self.url = url
        self._token = token
        self._start_timeout = start_timeout
        self._settle_timeout = settle_timeout
        self._connect_timeout = connect_timeout
        self._reconnect_delay_first = reconnect_delay_first
        self._reconnect_delay_max = reconnect_delay_max
        self._buffer = asyncio.Semaphore(buffer_frames)
        self._pacer = _Pacer(messages_per_second)
        self._calls: dict[str, Call] = {}
        self._connection: ClientConnection | None = None
        self._generation = 0
        self._runner: asyncio.Task[None] | None = None
        self._fatal: VoiceMeterError | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        #: How many times the connection was established (1 + reconnects), for operators and tests.
        self.connections_made = 0

    async def start_call(self, call_id: str, user_id: str, **details: Unpack[CallDetails]) -> Call:
        """Start a call; returns once the server accepted it.

        Raises `CallRejected` with the server's reason (e.g. `month_budget_exhausted`,
        `call_ended`, or an error code such as `invalid_timestamp`), `ValueError` for a field
        the server would refuse, `AuthenticationFailed`, or `TimeoutError` after
        `start_timeout`. A call is carried by one client: the server does not say which seqs
        another client already used, so a call is not continued from another process.
        """
        if self._closed:
            raise RuntimeError("this VoiceMeter is closed")
        if self._fatal is not None:
            raise self._fatal
        if call_id in self._calls:
            raise ValueError(f"call {call_id} is already live on this client")
        call = Call(self, call_id, user_id, start_message(call_id, user_id, details))
        self._calls[call_id] = call
        try:
            self._ensure_running()
            self._kick(call)
            await asyncio.wait_for(asyncio.shield(call._accepted), self._start_timeout)
        except BaseException:
            if self._calls.get(call_id) is call:
                del self._calls[call_id]
            call._finish("the call was not started")
            raise
        return call

    @asynccontextmanager
    async def call(self, call_id: str, user_id: str, **details: Unpack[CallDetails]) -> AsyncIterator[Call]:
        """`async with vm.call(...) as call:` starts the call and ends it when the block is left
        (also on an exception), waiting for every ack and the summary (`Call.end`)."""
        call = await self.start_call(call_id, user_id, **details)
        try:
            yield call
        finally:
            await call.end()

    async def close(self) -> None:
        """Close the connection. Calls still live are abandoned by the client (the server ends
        them after its silence timeout); their unacknowledged frames are logged, and whoever
        waits on them gets `CallNotSettled` (or, for a start, `VoiceMeterError`)."""
        self._closed = True
        for call in list(self._calls.values()):
            if call._pending:
                logger.warning(
                    "closing with %d unacknowledged frames of call %s", len(call._pending), call.call_id
                )
            call._fail_start(VoiceMeterError("the client was closed"))
            call._finish("the client was closed")
        self._calls.clear()
        # Closing the connection ends the runner's read loop; cancelling ends a reconnect wait.
        if self._connection is not None:
            await self._connection.close()
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
        for task in list(self._tasks):
            task.cancel()

    async def __aenter__(self) -> VoiceMeter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # The connection.

    def _ensure_running(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="voicemeter")

    async def _run(self) -> None:
        failures = 0
        while not self._closed:
            try:
                connection = await connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self._token}"},
                    subprotocols=[Subprotocol("voicemeter.v1")],
                    open_timeout=self._connect_timeout,
                    max_size=2**20,
                )
            except InvalidStatus as error:
                status = error.response.status_code
                if status in (401, 403):
                    self._fail(AuthenticationFailed(f"{self.url} refused the token: HTTP {status}"))
                    return
                logger.warning("connecting to %s: HTTP %d; retrying", self.url, status)
            except InvalidURI as error:
                self._fail(VoiceMeterError(f"cannot connect to {self.url}: {error}"))
                return
            except (OSError, InvalidHandshake, TimeoutError) as error:
                logger.warning("connecting to %s failed (%s); retrying", self.url, error)
            else:
                opened = time.monotonic()
                await self._serve(connection)
                if time.monotonic() - opened >= _STABLE_CONNECTION_SECONDS:
                    failures = 0
            failures += 1
            ceiling = self._reconnect_delay_first * 2 ** min(failures, 16)
            await asyncio.sleep(random.uniform(0, min(self._reconnect_delay_max, ceiling)))

    async def _serve(self, connection: ClientConnection) -> None:
        self._generation += 1
        self._connection = connection
        self.connections_made += 1
        for call in list(self._calls.values()):
            self._kick(call)  # each call's sender starts over on this connection
        try:
            async for message in connection:
                if isinstance(message, str):
                    self._dispatch(message)
        except ConnectionClosed as closed:
            logger.info("connection to %s closed (%s); reconnecting", self.url, closed)
        finally:
            self._connection = None

    def _fail(self, error: VoiceMeterError) -> None:
        self._fatal = error
        for call in self._calls.values():
            call._fail_start(error)
            if not call._settled.done():
                call._settled.set_exception(error)

    async def _send(self, text: str, generation: int) -> None:
        """Sends on connection `generation` (after pacing); nothing if that connection is gone:
        the sender of each call starts over on the next one."""
        await self._pacer.take()
        connection = self._connection
        if connection is None or generation != self._generation:
            return
        try:
            await connection.send(text)
        except ConnectionClosed:
            pass

    def _kick(self, call: Call) -> None:
        """Makes sure the call's sender runs (it picks up whatever is new)."""
        if not call._flushing and self._connection is not None:
            self._spawn(call._flush())

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Server messages.

    def _dispatch(self, text: str) -> None:
        try:
            message = json.loads(text)
            if not isinstance(message, dict):
                raise ValueError("not a JSON object")
            call = self._calls.get(str(message.get("call_id")))
            if call is None:
                if message.get("type") == "error":
                    logger.warning("server error: %s", message)
                return
            call._handle(message.get("type"), message)
        except Exception as error:  # one bad message must not stop the connection's reader
            logger.error("cannot handle a message from the server (%r): %.300s", error, text)
