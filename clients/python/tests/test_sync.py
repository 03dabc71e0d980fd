"""The blocking wrapper carries a call like the async client."""

import uuid
from decimal import Decimal

from conftest import VoiceMeterServer
from voicemeter.sync import VoiceMeterSync


def test_a_blocking_call_is_stored_and_summarised(voicemeter_server: VoiceMeterServer) -> None:
    vm = VoiceMeterSync(url=voicemeter_server.url, token=voicemeter_server.token)
    call_id = f"CA-sync-{uuid.uuid4().hex[:10]}"
    with vm.call(call_id=call_id, user_id="sync-user", revenue="1.00") as call:
        assert call.usage("twilio", "voice_inbound", "seconds", 61) == 1
    vm.close()
    assert call.summary is not None
    assert call.summary.by_service == {"twilio": Decimal("0.0170")}
    assert voicemeter_server.sql(f"SELECT count(*) FROM api_call_events WHERE call_id = '{call_id}'") == [("1",)]
