"""VoiceMeter's Python SDK: stream a voice-AI call's usage, get budget warnings, cutoffs and its cost.

```python
from voicemeter import VoiceMeter
vm = VoiceMeter(url="ws://127.0.0.1:8787/v1/stream", token="vmi_…")
async with vm.call(call_id="CA…", user_id="u1", revenue="4.99") as call:
    await call.usage(service="openai", operation="chat_completion", unit="input_tokens",
                     amount=9747, model="gpt-4.1-mini")
print(call.summary.margin)
await vm.close()
```
Integrations: `voicemeter.pipecat`, `voicemeter.livekit`, `voicemeter.twilio`; blocking code: `voicemeter.sync`.
"""

from ._amounts import UNITS, usage_amount
from ._call import Call
from ._client import VoiceMeter
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

__all__ = [
    "UNITS",
    "AuthenticationFailed",
    "BudgetCutoff",
    "BudgetWarning",
    "Call",
    "CallEnded",
    "CallNotSettled",
    "CallRejected",
    "CallSummary",
    "FrameRefused",
    "VoiceMeter",
    "VoiceMeterError",
    "usage_amount",
]
