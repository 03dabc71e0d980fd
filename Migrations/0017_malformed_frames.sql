-- A usage frame the decoder refuses (a field missing or malformed) still names its call and seq:
-- that seq is settled as refused for good, like an amount or ts out of bounds, and kept here so a
-- call resumed on another node settles it too. Without it the call's acks stopped at that seq.
ALTER TABLE rejected_frames DROP CONSTRAINT rejected_frames_reason_check;
ALTER TABLE rejected_frames ADD CONSTRAINT rejected_frames_reason_check
    CHECK (reason IN ('unknown_call', 'invalid_amount', 'invalid_timestamp', 'ledger_refused', 'malformed'));
