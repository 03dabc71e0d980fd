-- Metering core (issue 21).
-- A call counts its registrations: an ending written by a node's copy of a call whose connection
-- closed applies only while no later call.start resumed the call elsewhere, so a stale copy can
-- never end (abandon) a call that moved on.
ALTER TABLE calls ADD COLUMN registrations bigint NOT NULL DEFAULT 1 CHECK (registrations >= 1);

-- Frames refused for good are kept with their reason: a call resumed on another node counts
-- those seqs as settled, so its acknowledgements never stall on a frame the sender dropped.
ALTER TABLE rejected_frames DROP CONSTRAINT rejected_frames_reason_check;
ALTER TABLE rejected_frames ADD CONSTRAINT rejected_frames_reason_check
    CHECK (reason IN ('unknown_call', 'invalid_amount', 'invalid_timestamp', 'ledger_refused'));
