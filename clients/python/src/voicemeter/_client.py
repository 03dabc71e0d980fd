"""The VoiceMeter client: one WebSocket carrying many calls, every frame kept until acknowledged.

Lifecycle of a frame: `Call.usage` gives it the call's next seq and keeps it (waiting when the
client's buffer of unacknowledged frames is full); it is sent at once when the connection is up.
An `ack` for seq N (cumulative) releases the call's frames up to N. A frame refused transiently
(`overloaded`, `rate_limited`) is sent again after a short jittered delay; one refused for good is
recorded in `Call.refused` and released (the ack passes it). When the connection drops, the
client reconnects with exponential backoff and full jitter and, for every live call, sends
`call.start` again (the server resumes the call), then every unacknowledged frame in seq order,
then `call.end` if the call was ending. `(call_id, seq)` is the server's idempotency key, so a
resend is never counted twice.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from ._amounts import Amount, Money, decimal_from_server, money, timestamp, usage_amount
from ._events import (
    AuthenticationFailed,
    BudgetCutoff,
    BudgetWarning,
    CallEnded,
    CallNotSettled,
    CallRejected,
    CallSummary,
    FrameRefused,
)

logger = logging.getLogger("voicemeter")

_TRANSIENT_CODES = frozenset({"overloaded", "rate_limited"})
_REFUSED_FOR_GOOD_CODES = frozenset({"invalid_amount", "invalid_timestamp", "seq_conflict", "internal"})

Event = BudgetWarning | BudgetCutoff
E = TypeVar("E", BudgetWarning, BudgetCutoff)
Callback = Callable[[E], Awaitable[None] | None]


class VoiceMeter:
    """A connection to a VoiceMeter server that carries any number of calls.

    `buffer_frames` bounds the unacknowledged frames kept over all calls (`Call.usage` waits
    while it is full); `settle_timeout` bounds how long ending a call waits for its acks and
    summary, in seconds; `start_timeout` how long `call.start` waits for its answer.
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
    ) -> None:
        if buffer_frames < 1:
            raise ValueError("buffer_frames must be at least 1")
        self.url = url
        self._token = token
        self._start_timeout = start_timeout
        self._settle_timeout = settle_timeout
        self._connect_timeout = connect_timeout
        self._reconnect_delay_first = reconnect_delay_first
        self._reconnect_delay_max = reconnect_delay_max
        self._buffer = asyncio.Semaphore(buffer_frames)
        self._calls: dict[str, Call] = {}
        self._connection: ClientConnection | None = None
        self._generation = 0
        self._runner: asyncio.Task[None] | None = None
        self._fatal: AuthenticationFailed | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        #: How many times the connection was established (1 + reconnects), for operators and tests.
        self.connections_made = 0

    async def start_call(
        self,
        call_id: str,
        user_id: str,
        *,
        revenue: Money | None = None,
        currency: str | None = None,
        payment_method: str | None = None,
        persona_id: str | None = None,
        ts: datetime | str | None = None,
    ) -> Call:
        """Start (or resume) a call; returns once the server accepted it.

        Raises `CallRejected` with the server's reason (e.g. `month_budget_exhausted`,
        `call_ended`), `AuthenticationFailed`, or `TimeoutError` after `start_timeout`.
        """
        if self._closed:
            raise RuntimeError("this VoiceMeter is closed")
        if call_id in self._calls:
            raise ValueError(f"call {call_id} is already live on this client")
        start: dict[str, Any] = {"type": "call.start", "call_id": call_id, "user_id": user_id}
        start["ts"] = timestamp(ts)
        if revenue is not None:
            start["revenue"] = money(revenue, "revenue")
        for key, value in (
            ("currency", currency),
            ("payment_method", payment_method),
            ("persona_id", persona_id),
        ):
            if value is not None:
                start[key] = value
        call = Call(self, call_id, user_id, json.dumps(start))
        self._calls[call_id] = call
        self._ensure_running()
        try:
            await self._send_start(call)
            await asyncio.wait_for(asyncio.shield(call._accepted), self._start_timeout)
        except BaseException:
            self._calls.pop(call_id, None)
            call._finish()
            raise
        return call

    @asynccontextmanager
    async def call(
        self,
        call_id: str,
        user_id: str,
        *,
        revenue: Money | None = None,
        currency: str | None = None,
        payment_method: str | None = None,
        persona_id: str | None = None,
        ts: datetime | str | None = None,
    ) -> AsyncIterator[Call]:
        """`async with vm.call(...) as call:` starts the call and ends it when the block is left
        (also on an exception), waiting for every ack and the summary (`Call.end`)."""
        call = await self.start_call(
            call_id,
            user_id,
            revenue=revenue,
            currency=currency,
            payment_method=payment_method,
            persona_id=persona_id,
            ts=ts,
        )
        try:
            yield call
        finally:
            await call.end()

    async def close(self) -> None:
        """Close the connection. Calls still live are abandoned by the client (the server ends
        them after its silence timeout); their unacknowledged frames are logged."""
        self._closed = True
        for call in self._calls.values():
            if call._pending:
                logger.warning(
                    "closing with %d unacknowledged frames of call %s",
                    len(call._pending),
                    call.call_id,
                )
            call._finish()
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
        if self._runner is None:
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
            except (OSError, InvalidHandshake, TimeoutError) as error:
                logger.warning("connecting to %s failed (%s); retrying", self.url, error)
            else:
                failures = 0
                await self._serve(connection)
            failures += 1
            ceiling = min(self._reconnect_delay_max, self._reconnect_delay_first * 2 ** min(failures, 16))
            await asyncio.sleep(random.uniform(0, ceiling))

    async def _serve(self, connection: ClientConnection) -> None:
        self._generation += 1
        self._connection = connection
        self.connections_made += 1
        try:
            for call in list(self._calls.values()):
                await self._send_start(call)
                await self._resend_all(call)
            async for message in connection:
                if isinstance(message, str):
                    self._dispatch(message)
        except ConnectionClosed as closed:
            logger.info("connection to %s closed (%s); reconnecting", self.url, closed)
        finally:
            self._connection = None

    def _fail(self, error: AuthenticationFailed) -> None:
        self._fatal = error
        for call in self._calls.values():
            if not call._accepted.done():
                call._accepted.set_exception(error)
            if not call._settled.done():
                call._settled.set_exception(error)

    async def _send(self, text: str) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            await connection.send(text)
        except ConnectionClosed:
            pass  # the runner reconnects and resends everything unacknowledged

    async def _send_start(self, call: Call) -> None:
        if self._connection is None:
            return  # sent on (re)connect
        call._generation = self._generation
        await self._send(call._start_message)

    async def _resend_all(self, call: Call) -> None:
        """Every unacknowledged frame in seq order, then `call.end` if the call is ending."""
        for seq in sorted(call._pending):
            text = call._pending.get(seq)
            if text is not None:
                await self._send(text)
        if call._end_message is not None:
            await self._send(call._end_message)

    def _carries(self, call: Call) -> bool:
        return self._connection is not None and call._generation == self._generation

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Server messages.

    def _dispatch(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            logger.error("the server sent a message that is not JSON: %.200s", text)
            return
        call = self._calls.get(str(message.get("call_id")))
        kind = message.get("type")
        if call is None:
            if kind == "error":
                logger.warning("server error: %s", message)
            return
        try:
            call._handle(kind, message)
        except (KeyError, ValueError) as error:
            logger.error("malformed %s from the server (%s): %.200s", kind, error, text)


class Call:
    """One live call: assigns its seqs, keeps its unacknowledged frames and its budget events."""

    def __init__(self, meter: VoiceMeter, call_id: str, user_id: str, start_message: str) -> None:
        self.call_id = call_id
        self.user_id = user_id
        self._meter = meter
        self._start_message = start_message
        self._end_message: str | None = None
        self._generation = -1
        self._next_seq = 1
        self._pending: dict[int, str] = {}
        self._acknowledged = 0
        loop = asyncio.get_running_loop()
        self._accepted: asyncio.Future[None] = loop.create_future()
        self._settled: asyncio.Future[None] = loop.create_future()
        # Nobody may be waiting when the token is refused: the failure is raised to the next waiter.
        self._settled.add_done_callback(lambda settled: settled.cancelled() or settled.exception())
        self._cutoff_callbacks: list[Callback[BudgetCutoff]] = []
        self._warning_callbacks: list[Callback[BudgetWarning]] = []
        self._subscribers: list[asyncio.Queue[Event | None]] = []
        self._ended = False
        self._taking_back = False
        self._streamed_services: set[str] = set()
        #: The first `budget.cutoff` (the server repeats it while usage keeps coming).
        self.cutoff: BudgetCutoff | None = None
        #: Every `budget.warning`, in order.
        self.warnings: list[BudgetWarning] = []
        #: Frames refused for good: not counted, not resent.
        self.refused: list[FrameRefused] = []
        #: Set when the call has ended and the server summarised it.
        self.summary: CallSummary | None = None
        #: `call.accepted`'s figures: `call_limit`, `month_spent`, `month_limit` (Decimal or None).
        self.accepted: dict[str, Any] = {}

    @property
    def unacknowledged(self) -> list[int]:
        """Seqs sent (or waiting to be) that no ack covers yet."""
        return sorted(self._pending)

    @property
    def streamed_services(self) -> frozenset[str]:
        """The services this call has reported usage of."""
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

        Returns as soon as the frame is kept (it is acknowledged later); waits only while the
        client's buffer of unacknowledged frames is full. `amount`: see `usage_amount` for how
        floats are rounded. `ts` defaults to now.
        """
        if self._ended or self._end_message is not None:
            raise CallEnded(f"call {self.call_id} has ended; usage is no longer taken")
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
            frame["metadata"] = metadata
        await self._meter._buffer.acquire()
        if self._ended:
            self._meter._buffer.release()
            raise CallEnded(f"call {self.call_id} has ended; usage is no longer taken")
        seq = self._next_seq
        self._next_seq += 1
        frame["seq"] = seq
        text = json.dumps(frame)
        self._pending[seq] = text
        self._streamed_services.add(service)
        if self._meter._carries(self):
            await self._meter._send(text)
        return seq

    async def end(self, ts: datetime | str | None = None) -> CallSummary | None:
        """Send `call.end` and wait (at most `settle_timeout`) until every frame is acknowledged
        and the summary has come; returns it. Idempotent.

        Raises `CallNotSettled` naming the unacknowledged seqs when the bound passes, or when the
        server had already ended the call (it then takes no more of its frames). Returns `None`
        only when the server had ended the call after taking all its frames but its summary was
        lost with a connection (the costs are at the finance API's `/v1/calls/{id}/costs`).
        """
        if self._end_message is None and not self._ended:
            self._end_message = json.dumps(
                {"type": "call.end", "call_id": self.call_id, "ts": timestamp(ts)}
            )
            if self._meter._carries(self):
                await self._meter._send(self._end_message)
        try:
            await asyncio.wait_for(asyncio.shield(self._settled), self._meter._settle_timeout)
        except TimeoutError:
            raise CallNotSettled(
                self.call_id, self.unacknowledged, "no summary within the settle timeout"
            ) from None
        if self._pending:
            raise CallNotSettled(self.call_id, self.unacknowledged, "the server ended the call")
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
            self._finish()
        elif kind == "error":
            self._error(message)

    def _acknowledge(self, seq: int) -> None:
        if seq <= self._acknowledged:
            return
        for settled in range(self._acknowledged + 1, seq + 1):
            if self._pending.pop(settled, None) is not None:
                self._meter._buffer.release()
        self._acknowledged = seq

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
        self._finish()

    def _error(self, message: dict[str, Any]) -> None:
        code = str(message.get("code"))
        seq = message.get("seq")
        if not isinstance(seq, int) or seq not in self._pending:
            logger.warning("call %s: server error %s: %s", self.call_id, code, message.get("message"))
            return
        if code in _TRANSIENT_CODES:
            self._meter._spawn(self._resend_later(seq))
        elif code == "unknown_call":
            # The call is not (or no longer) carried by this connection: take it back.
            self._meter._spawn(self._take_back())
        elif code in _REFUSED_FOR_GOOD_CODES:
            self.refused.append(FrameRefused(self.call_id, seq, code, str(message.get("message"))))
            logger.error("call %s seq %d refused for good: %s", self.call_id, seq, message)
        else:
            logger.warning("call %s seq %d: server error %s", self.call_id, seq, code)

    async def _resend_later(self, seq: int) -> None:
        await asyncio.sleep(random.uniform(0.1, 0.5))
        text = self._pending.get(seq)
        if text is not None and self._meter._carries(self):
            await self._meter._send(text)

    async def _take_back(self) -> None:
        if self._taking_back or not self._meter._carries(self):
            return  # one at a time: each refused frame of the call asks for it
        self._taking_back = True
        try:
            await self._meter._send_start(self)
            await self._meter._resend_all(self)
        finally:
            self._taking_back = False

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

    def _finish(self) -> None:
        """The call is over on this client: release its buffer slots, wake whoever waits."""
        if self._ended:
            return
        self._ended = True
        for _ in self._pending:
            self._meter._buffer.release()
        if not self._settled.done():
            self._settled.set_result(None)
        for queue in self._subscribers:
            queue.put_nowait(None)
