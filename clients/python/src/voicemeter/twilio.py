"""Twilio's own call duration as the call's telephony usage.

Twilio bills a call per minute of its duration, rounded up to whole minutes. A pipeline that does
not stream telephony seconds itself gets Twilio's cost right from the call's status callback
(`StatusCallback` with `StatusCallbackEvent=completed`): its `CallDuration` becomes one usage frame
of `twilio` / `voice_inbound` or `voice_outbound` in `seconds`, which the server rounds up to whole
minutes per call as Twilio does.

Use one source of telephony usage per call, never both: `TwilioDurations.record` refuses a call
that has streamed `twilio` usage, and `Call.usage` refuses `twilio` usage for a call that has
recorded Twilio's duration, since both would be billed. A call with several legs (a `<Dial>`)
records each leg's callback.

```python
durations = TwilioDurations()

# In the web handler of Twilio's status callback (form fields as a mapping):
durations.deliver(form)

# In the call, after the pipeline has hung up and before the call ends:
async with vm.call(call_id=call_sid, user_id=user) as call:
    ...                                   # the pipeline runs
    await durations.record(call)          # waits (bounded) for Twilio's callback of this call
```
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from ._call import Call
from ._messages import usage_message

#: The service the server prices Twilio voice under.
SERVICE = "twilio"
#: How a call's telephony usage is told apart from streamed seconds (one source per call).
_SOURCE = "Twilio's status callback"

#: Directions Twilio reports: the parent leg of an inbound call, or an outbound one.
_OPERATION_BY_DIRECTION = {
    "inbound": "voice_inbound",
    "outbound-api": "voice_outbound",
    "outbound-dial": "voice_outbound",
    "trunking-originating": "voice_outbound",
    "trunking-terminating": "voice_inbound",
}


@dataclass(frozen=True)
class TelephonyUsage:
    """One call's telephony usage as Twilio bills it: its whole duration in seconds."""

    call_sid: str
    operation: str
    seconds: int
    ended_at: datetime
    direction: str

    async def send(self, call: Call) -> int:
        """Report it as the call's usage; returns the frame's seq. Raises `ValueError` when the
        call streams telephony seconds itself (never both)."""
        frame = usage_message(
            call.call_id,
            SERVICE,
            self.operation,
            "seconds",
            self.seconds,
            None,
            self.ended_at,
            f"{self.call_sid}-duration",
            {"source": "twilio_status_callback", "direction": self.direction},
        )
        return await call._keep(frame, _SOURCE)


def telephony_usage(params: Mapping[str, str]) -> TelephonyUsage | None:
    """The usage of a status callback (`CallSid`, `CallStatus`, `CallDuration`, `Direction`,
    `Timestamp`), or `None` for a call that was never connected (busy, no answer, failed,
    canceled: Twilio bills nothing). Raises `ValueError` naming the field when one is missing or
    malformed."""
    status = _field(params, "CallStatus")
    if status != "completed":
        return None
    call_sid = _field(params, "CallSid")
    duration = _field(params, "CallDuration")
    if not duration.isdigit():
        raise ValueError(f"CallDuration must be whole seconds, got {duration!r}")
    direction = _field(params, "Direction")
    operation = _OPERATION_BY_DIRECTION.get(direction)
    if operation is None:
        raise ValueError(
            f"unknown Direction {direction!r}; expected one of {', '.join(_OPERATION_BY_DIRECTION)}"
        )
    stamp = params.get("Timestamp")
    ended_at = parsedate_to_datetime(stamp) if stamp else datetime.now(timezone.utc)
    if ended_at.tzinfo is None:
        ended_at = ended_at.replace(tzinfo=timezone.utc)  # "-0000": UTC, local offset unknown
    return TelephonyUsage(call_sid, operation, int(duration), ended_at, direction)


class TwilioDurations:
    """Meets Twilio's status callbacks (a web handler) with the calls waiting for them.

    At most `retained` callbacks that no call has claimed yet are kept (the oldest go first).
    """

    def __init__(self, retained: int = 10_000) -> None:
        self._retained = retained
        self._delivered: OrderedDict[str, TelephonyUsage | None] = OrderedDict()
        self._waiting: dict[str, asyncio.Future[TelephonyUsage | None]] = {}

    def deliver(self, params: Mapping[str, str]) -> TelephonyUsage | None:
        """Take one status callback; only final statuses (completed, busy, …) settle a call."""
        if params.get("CallStatus") not in ("completed", "busy", "no-answer", "failed", "canceled"):
            return None  # ringing, in-progress: not final
        usage = telephony_usage(params)
        call_sid = _field(params, "CallSid")
        waiter = self._waiting.pop(call_sid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(usage)
        else:
            self._delivered[call_sid] = usage
            while len(self._delivered) > self._retained:
                self._delivered.popitem(last=False)
        return usage

    async def record(
        self, call: Call, *, call_sid: str | None = None, timeout: float = 30.0
    ) -> TelephonyUsage | None:
        """Wait for the final status callback of `call_sid` (default: the call's id; record
        each leg of a call that has several) and send its duration as the call's telephony
        usage; `None` when Twilio billed nothing. Raises `TimeoutError` after `timeout`
        seconds, `ValueError` when the call streams telephony seconds itself."""
        if SERVICE in call.streamed_services:
            raise ValueError(
                f"call {call.call_id} already streamed {SERVICE} usage: "
                "use Twilio's duration or streamed seconds, never both"
            )
        sid = call_sid or call.call_id
        if sid in self._delivered:
            usage = self._delivered.pop(sid)
        else:
            waiter = self._waiting.setdefault(sid, asyncio.get_running_loop().create_future())
            try:
                usage = await asyncio.wait_for(waiter, timeout)
            finally:
                self._waiting.pop(sid, None)
        if usage is not None:
            await usage.send(call)
        return usage


def _field(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise ValueError(f"the status callback has no {name}")
    return value
