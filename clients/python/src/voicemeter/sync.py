"""Blocking wrappers for code without an event loop: the client runs on a loop in its own thread.

```python
from voicemeter.sync import VoiceMeterSync
vm = VoiceMeterSync(url="ws://127.0.0.1:8787/v1/stream", token="vmi_…")
with vm.call(call_id="CA…", user_id="u1") as call:
    call.usage("deepgram", "stt_streaming", "seconds", "2.5", model="nova-2")
print(call.summary)
vm.close()
```
Callbacks given to `on_cutoff`/`on_warning` run on the client's thread: keep them short.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar, Unpack

from ._amounts import Amount
from ._call import Call, Callback
from ._client import VoiceMeter
from ._messages import CallDetails
from ._events import BudgetCutoff, BudgetWarning, CallSummary, FrameRefused

T = TypeVar("T")


class VoiceMeterSync:
    """`VoiceMeter` for blocking code; the same options."""

    def __init__(self, url: str, token: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="voicemeter", daemon=True)
        self._thread.start()
        self._meter = self._run(self._create(url, token, options))

    @staticmethod
    async def _create(url: str, token: str, options: dict[str, Any]) -> VoiceMeter:
        return VoiceMeter(url, token, **options)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def start_call(self, call_id: str, user_id: str, **details: Unpack[CallDetails]) -> SyncCall:
        """`VoiceMeter.start_call`, blocking; raises `CallRejected`."""
        return SyncCall(self, self._run(self._meter.start_call(call_id, user_id, **details)))

    @contextmanager
    def call(self, call_id: str, user_id: str, **details: Unpack[CallDetails]) -> Iterator[SyncCall]:
        """`with vm.call(...) as call:` ends the call (and waits for its summary) on leaving."""
        call = self.start_call(call_id, user_id, **details)
        try:
            yield call
        finally:
            call.end()

    def close(self) -> None:
        self._run(self._meter.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


class SyncCall:
    """`Call`, blocking."""

    def __init__(self, meter: VoiceMeterSync, call: Call) -> None:
        self._meter = meter
        self._call = call
        self.call_id = call.call_id

    def usage(
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
        """`Call.usage`: returns the seq once the frame is kept (not acknowledged yet)."""
        return self._meter._run(
            self._call.usage(
                service, operation, unit, amount, model=model, ts=ts, external_id=external_id, metadata=metadata
            )
        )

    def end(self) -> CallSummary | None:
        """`Call.end`: blocks until every frame is acknowledged and the summary came."""
        return self._meter._run(self._call.end())

    def on_cutoff(self, callback: Callback[BudgetCutoff]) -> None:
        self._meter._loop.call_soon_threadsafe(self._call.on_cutoff, callback)

    def on_warning(self, callback: Callback[BudgetWarning]) -> None:
        self._meter._loop.call_soon_threadsafe(self._call.on_warning, callback)

    @property
    def cutoff(self) -> BudgetCutoff | None:
        return self._call.cutoff

    @property
    def warnings(self) -> list[BudgetWarning]:
        return list(self._call.warnings)

    @property
    def refused(self) -> list[FrameRefused]:
        """Frames the server refused for good: not counted."""
        return list(self._call.refused)

    @property
    def unacknowledged(self) -> list[int]:
        return self._call.unacknowledged

    @property
    def summary(self) -> CallSummary | None:
        return self._call.summary
