-- Frames the server could not attach to a call (usage or call.end before call.start), kept for
-- audit: nothing a pipeline sends is silently dropped. They are not billed.
CREATE TABLE rejected_frames (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    call_id     text NOT NULL,
    seq         bigint,
    reason      text NOT NULL CHECK (reason IN ('unknown_call')),
    payload     jsonb NOT NULL
);
CREATE INDEX rejected_frames_by_call ON rejected_frames (call_id);
