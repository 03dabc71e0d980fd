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
import inspect
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypedDict, TypeVar, Unpack

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from ._amounts import Amount, Money, decimal_from_server, money, text_field, timestamp, usage_amount
from ._events import (
    AuthenticationFailed,
    BudgetCutoff,
    BudgetWarning,
    CallEnded,
    CallNotSettled,
    CallRejected,
    CallSummary,
    FrameRefused,
    VoiceMeterError,
)

logger = logging.getLogger("voicemeter")

_TRANSIENT_CODES = frozenset({"overloaded", "rate_limited"})
#: Metadata the server stores per frame, serialised, at most (protocol v1).
_METADATA_BYTES_MAX = 8 * 1024
#: A connection that lived this long was a success: the reconnect backoff starts over.
_STABLE_CONNECTION_SECONDS = 10.0

Event = BudgetWarning | BudgetCutoff
E = TypeVar("E", BudgetWarning, BudgetCutoff)
Callback = Callable[[E], Awaitable[None] | None]


class CallDetails(TypedDict, total=False):
    """A call's optional `call.start` fields: what the caller paid (`revenue`, exact; with its
    `currency`, default USD, and `payment_method`, default card, which select the payment fee),
    the `persona_id`, and when it started (`ts`, default now)."""

    revenue: Money
    currency: str
    payment_method: str
    persona_id: str
    ts: datetime | str


def _start_message(call_id: str, user_id: str, details: CallDetails) -> str:
    """`call.start`, checked against the server's bounds (`ValueError` names the field)."""
    text_field(call_id, "call_id", longest=100)
    text_field(user_id, "user_id", longest=255)
    text_field(details.get("persona_id"), "persona_id", longest=50, required=False)
    text_field(details.get("payment_method"), "payment_method", longest=50, required=False)
    currency = details.get("currency")
    if currency is not None and not (len(currency) == 3 and currency.isascii() and currency.isupper()):
        raise ValueError(f"currency must be three capital letters like USD, got {currency!r}")
    start: dict[str, Any] = {"type": "call.start", "call_id": call_id, "user_id": user_id, "ts": timestamp(details.get("ts"))}
    if "revenue" in details:
        start["revenue"] = money(details["revenue"], "revenue")
    for key in ("currency", "payment_method", "persona_id"):
        if key in details:
            start[key] = details[key]
    return json.dumps(start)


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
        call = Call(self, call_id, user_id, _start_message(call_id, user_id, details))
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


class Call:
    """One live call: assigns its seqs, keeps its unacknowledged frames and its budget events."""

    def __init__(self, meter: VoiceMeter, call_id: str, user_id: str, start_message: str) -> None:
        self.call_id = call_id
        self.user_id = user_id
        self._meter = meter
        self._start_message = start_message
        self._end_message: str | None = None
        self._next_seq = 1
        self._pending: dict[int, str] = {}
        self._acknowledged = 0
        # The sender's progress on the current connection.
        self._flushing = False
        self._flushed_generation = -1
        self._start_sent = False
        self._sent_through = 0
        self._end_sent = False
        self._highest_sent = 0
        self._taken_back_generation = -1
        self._transient_streak = 0
        loop = asyncio.get_running_loop()
        self._accepted: asyncio.Future[None] = loop.create_future()
        self._settled: asyncio.Future[None] = loop.create_future()
        # Nobody may be waiting when the token is refused: the failure is raised to the next waiter.
        self._settled.add_done_callback(lambda settled: settled.cancelled() or settled.exception())
        self._cutoff_callbacks: list[Callback[BudgetCutoff]] = []
        self._warning_callbacks: list[Callback[BudgetWarning]] = []
        self._subscribers: list[asyncio.Queue[Event | None]] = []
        self._ended = False
        self._end_reason: str | None = None
        self._telephony_source: str | None = None
        self._streamed_services: set[str] = set()
        #: The first `budget.cutoff` (the server repeats it while usage keeps coming).
        self.cutoff: BudgetCutoff | None = None
        #: Every `budget.warning`, in order.
        self.warnings: list[BudgetWarning] = []
        #: Frames the server refused for good: not counted, not resent.
        self.refused: list[FrameRefused] = []
        #: Set when the call has ended and the server summarised it.
        self.summary: CallSummary | None = None
        #: `call.accepted`'s figures: `call_limit`, `month_spent`, `month_limit` (Decimal or None).
        self.accepted: dict[str, Any] = {}

    @property
    def unacknowledged(self) -> list[int]:
        """Seqs kept (sent or waiting to be) that no ack covers yet."""
        return sorted(self._pending)

    @property
    def streamed_services(self) -> frozenset[str]:
        """The services this call has streamed usage of."""
        return frozenset(self._streamed_services)

    async def usage(
        self,
        service: str,
        operation: str,
        unit: str,
        amount: Amount,
        *,
        model: str | None = None,
        ts: datetime | str | None = None,
        external_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        """Report usage since the previous frame of this service; returns the frame's seq.

        Returns as soon as the frame is kept (it is sent in the background and acknowledged
        later); waits only while the client's buffer of unacknowledged frames is full. Raises
        `ValueError` for a frame the server would refuse (see `usage_amount` for amounts and how
        floats are rounded), `CallEnded` once the call is ending. `ts` defaults to now.
        """
        return await self._keep(self._frame(service, operation, unit, amount, model, ts, external_id, metadata), "stream")

    async def _keep(self, frame: dict[str, Any], source: str) -> int:
        """Gives a checked frame the call's next seq and keeps it until acknowledged; `source`
        tells streamed usage from Twilio's own duration (never both for one call)."""
        service = str(frame["service"])
        self._check_open()
        if service == "twilio" and self._telephony_source not in (None, source):
            raise ValueError(
                f"call {self.call_id} already has Twilio usage from {self._telephony_source}: "
                "use Twilio's duration or streamed seconds, never both"
            )
        await self._meter._buffer.acquire()
        try:
            self._check_open()
        except BaseException:
            self._meter._buffer.release()
            raise
        seq = self._next_seq
        self._next_seq += 1
        frame["seq"] = seq
        self._pending[seq] = json.dumps(frame, allow_nan=False)
        if service == "twilio":
            self._telephony_source = source
        if source == "stream":
            self._streamed_services.add(service)
        self._meter._kick(self)
        return seq

    def _frame(
        self,
        service: str,
        operation: str,
        unit: str,
        amount: Amount,
        model: str | None,
        ts: datetime | str | None,
        external_id: str | None,
        metadata: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The usage message, checked against the server's bounds before it takes a seq (a seq
        the server refuses at decoding would stop the call's acks at it)."""
        text_field(service, "service", longest=50)
        text_field(operation, "operation", longest=100)
        text_field(model, "model", longest=100, required=False)
        text_field(external_id, "external_id", longest=200, required=False)
        frame: dict[str, Any] = {
            "type": "usage",
            "call_id": self.call_id,
            "seq": 0,
            "ts": timestamp(ts),
            "service": service,
            "operation": operation,
            "amount": usage_amount(amount, unit),
            "unit": unit,
        }
        if model is not None:
            frame["model"] = model
        if external_id is not None:
            frame["external_id"] = external_id
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise TypeError("metadata must be a dict (a JSON object)")
            try:
                encoded = json.dumps(metadata, allow_nan=False)
            except (TypeError, ValueError) as error:
                raise ValueError(f"metadata must be JSON (str, int, bool, None, lists, dicts; no NaN): {error}") from None
            if len(encoded.encode()) > _METADATA_BYTES_MAX or "\\u0000" in encoded:
                raise ValueError("metadata must be at most 8 KiB of JSON without NUL characters")
            frame["metadata"] = metadata
        return frame

    def _check_open(self) -> None:
        if self._meter._fatal is not None:
            raise self._meter._fatal
        if self._ended or self._end_message is not None:
            raise CallEnded(f"call {self.call_id} has ended; usage is no longer taken")

    async def end(self, ts: datetime | str | None = None) -> CallSummary | None:
        """Send `call.end` (after every frame kept before it) and wait, at most
        `settle_timeout`, until every frame is acknowledged and the summary has come; returns
        it. Idempotent.

        Raises `CallNotSettled` naming the unacknowledged seqs when the bound passes, when the
        server had already ended the call (it then takes no more of its frames), or when the
        client was closed. Returns `None` only when the server had ended the call after taking
        all its frames but its summary was lost with a connection (the costs are at the
        finance API's `/v1/calls/{id}/costs`).
        """
        if self._end_message is None and not self._ended:
            self._end_message = json.dumps({"type": "call.end", "call_id": self.call_id, "ts": timestamp(ts)})
            self._meter._kick(self)
        try:
            await asyncio.wait_for(asyncio.shield(self._settled), self._meter._settle_timeout)
        except TimeoutError:
            raise CallNotSettled(self.call_id, self.unacknowledged, "no summary within the settle timeout") from None
        if self._pending or self._end_reason is not None:
            raise CallNotSettled(self.call_id, self.unacknowledged, self._end_reason or "the server ended the call")
        return self.summary

    def on_cutoff(self, callback: Callback[BudgetCutoff]) -> None:
        """Call `callback(cutoff)` (sync or async) when the server cuts the call off; at once
        if it already has."""
        self._cutoff_callbacks.append(callback)
        if self.cutoff is not None:
            self._run_callback(callback, self.cutoff)

    def on_warning(self, callback: Callback[BudgetWarning]) -> None:
        """Call `callback(warning)` (sync or async) for each budget warning from now on."""
        self._warning_callbacks.append(callback)

    async def events(self) -> AsyncGenerator[Event, None]:
        """Budget warnings and the cutoff as they come, until the call ends."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while not self._ended or not queue.empty():
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._subscribers.remove(queue)

    # The sender.

    async def _flush(self) -> None:
        """Sends, in order, what the current connection has not had of this call: its start,
        its kept frames, its end. One runs per call; it picks up what is added meanwhile."""
        if self._flushing:
            return
        self._flushing = True
        try:
            while not self._ended and self._meter._connection is not None:
                generation = self._meter._generation
                if self._flushed_generation != generation:
                    self._flushed_generation = generation
                    self._restart_sending()
                if not self._start_sent:
                    self._start_sent = True
                    await self._meter._send(self._start_message, generation)
                    continue
                seq = self._sent_through + 1
                while seq < self._next_seq and seq not in self._pending:
                    seq += 1
                if seq < self._next_seq:
                    self._sent_through = seq
                    self._highest_sent = max(self._highest_sent, seq)
                    await self._meter._send(self._pending[seq], generation)
                    continue
                self._sent_through = self._next_seq - 1
                if self._end_message is not None and not self._end_sent:
                    self._end_sent = True
                    await self._meter._send(self._end_message, generation)
                    continue
                return
        finally:
            self._flushing = False

    def _restart_sending(self) -> None:
        """The connection has had nothing of this call: start, frames and end go again."""
        self._start_sent = False
        self._sent_through = self._acknowledged
        self._end_sent = False

    # Server messages for this call.

    def _handle(self, kind: object, message: dict[str, Any]) -> None:
        if kind == "ack":
            self._acknowledge(int(message["seq"]))
        elif kind == "call.accepted":
            self.accepted = {
                key: decimal_from_server(message[key], key) if message.get(key) is not None else None
                for key in ("call_limit", "month_spent", "month_limit")
            }
            if not self._accepted.done():
                self._accepted.set_result(None)
        elif kind == "call.rejected":
            self._rejected(message)
        elif kind == "budget.warning":
            warning = BudgetWarning.from_message(message)
            self.warnings.append(warning)
            self._publish(warning, self._warning_callbacks)
        elif kind == "budget.cutoff":
            if self.cutoff is None:
                self.cutoff = BudgetCutoff.from_message(message)
                self._publish(self.cutoff, self._cutoff_callbacks)
        elif kind == "call.summary":
            self.summary = CallSummary.from_message(message)
            self._meter._calls.pop(self.call_id, None)
            self._finish(None)
        elif kind == "error":
            self._error(message)

    def _acknowledge(self, seq: int) -> None:
        if self._ended or seq <= self._acknowledged:
            return
        if seq > self._highest_sent:
            # The server holds frames this client never sent: another client (a process that
            # ran before) carried the call with the same seqs. Continuing would collide with them.
            logger.error(
                "call %s: the server acknowledges seq %d but this client sent up to %d: the call was "
                "carried by another client; its frames here are not counted",
                self.call_id, seq, self._highest_sent,
            )
            self._meter._calls.pop(self.call_id, None)
            self._finish(f"the server already held seqs up to {seq} of this call from another client")
            return
        for settled in range(self._acknowledged + 1, seq + 1):
            if self._pending.pop(settled, None) is not None:
                self._meter._buffer.release()
        self._acknowledged = seq
        self._transient_streak = 0

    def _rejected(self, message: dict[str, Any]) -> None:
        spent, limit = message.get("spent"), message.get("limit")
        rejection = CallRejected(
            self.call_id,
            str(message.get("reason")),
            None if spent is None else decimal_from_server(spent, "spent"),
            None if limit is None else decimal_from_server(limit, "limit"),
        )
        if not self._accepted.done():
            self._accepted.set_exception(rejection)
            return
        # A resumed call the server has already ended (by our call.end, or after its silence
        # timeout): it takes no more of its frames.
        logger.warning("resuming call %s: %s", self.call_id, rejection)
        self._meter._calls.pop(self.call_id, None)
        self._finish(None if self._end_message is not None else f"the server ended the call ({rejection.reason})")

    def _error(self, message: dict[str, Any]) -> None:
        code = str(message.get("code"))
        text = str(message.get("message"))
        seq = message.get("seq")
        if not isinstance(seq, int):
            self._call_error(code, text)
        elif seq not in self._pending:
            logger.info("call %s seq %d (settled): %s", self.call_id, seq, code)
        elif code in _TRANSIENT_CODES:
            self._meter._spawn(self._resend_later(self._pending[seq], self._flushed_generation))
        elif code == "unknown_call":
            self._take_back()
        else:
            # Refused for good (invalid_amount, invalid_timestamp, seq_conflict, internal), or a
            # frame the server could not read at all: not counted, not resent.
            self.refused.append(FrameRefused(self.call_id, seq, code, text))
            logger.error("call %s seq %d refused: %s: %s", self.call_id, seq, code, text)

    def _call_error(self, code: str, text: str) -> None:
        """An error about the call's start or end (it names no seq)."""
        if code in _TRANSIENT_CODES:
            if not self._accepted.done():
                self._meter._spawn(self._resend_later(self._start_message, self._flushed_generation))
            elif self._end_message is not None:
                self._meter._spawn(self._resend_later(self._end_message, self._flushed_generation))
        elif not self._accepted.done():
            self._accepted.set_exception(CallRejected(self.call_id, code, message=text))
        else:
            logger.warning("call %s: server error %s: %s", self.call_id, code, text)

    async def _resend_later(self, text: str, generation: int) -> None:
        """Sends a message refused for now again, after a delay that grows while refusals go on."""
        self._transient_streak += 1
        ceiling = min(5.0, 0.2 * 2 ** min(self._transient_streak, 5))
        await asyncio.sleep(random.uniform(ceiling / 2, ceiling))
        if not self._ended and generation == self._flushed_generation:
            await self._meter._send(text, generation)

    def _take_back(self) -> None:
        """The connection does not carry the call (another took it): start it here again, once
        per connection, so two clients holding one call do not take it from each other forever."""
        generation = self._meter._generation
        if self._taken_back_generation == generation:
            return
        self._taken_back_generation = generation
        self._flushed_generation = generation
        self._restart_sending()
        self._meter._kick(self)

    def _publish(self, event: Event, callbacks: list[Callback[Any]]) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)
        for callback in callbacks:
            self._run_callback(callback, event)

    def _run_callback(self, callback: Callback[Any], event: Event) -> None:
        try:
            result = callback(event)
        except Exception:
            logger.exception("a %s callback of call %s failed", type(event).__name__, self.call_id)
            return
        if inspect.isawaitable(result):
            self._meter._spawn(result)

    def _fail_start(self, error: VoiceMeterError) -> None:
        if not self._accepted.done():
            self._accepted.set_exception(error)
            self._accepted.exception()  # retrieved: nobody may be waiting

    def _finish(self, reason: str | None) -> None:
        """The call is over on this client (`reason`: why it did not settle): its buffer slots
        are released, whoever waits is woken."""
        if self._ended:
            return
        self._ended = True
        self._end_reason = reason
        for _ in self._pending:
            self._meter._buffer.release()
        if not self._settled.done():
            self._settled.set_result(None)
        for queue in self._subscribers:
            queue.put_nowait(None)
