"""A call on a `VoiceMeter` connection: its frames kept until acknowledged and its one sender
(see `voicemeter._client` for the life of a frame)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ._amounts import Amount, decimal_from_server, timestamp
from ._events import (
    BudgetCutoff,
    BudgetWarning,
    CallEnded,
    CallNotSettled,
    CallRejected,
    CallSummary,
    FrameRefused,
    VoiceMeterError,
)
from ._messages import usage_message

if TYPE_CHECKING:
    from ._client import VoiceMeter

logger = logging.getLogger("voicemeter")

_TRANSIENT_CODES = frozenset({"overloaded", "rate_limited"})

Event = BudgetWarning | BudgetCutoff
E = TypeVar("E", BudgetWarning, BudgetCutoff)
Callback = Callable[[E], Awaitable[None] | None]


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
        return await self._keep(usage_message(self.call_id, service, operation, unit, amount, model, ts, external_id, metadata), "stream")

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
