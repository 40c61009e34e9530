-- The event log. Output lines are events too: their rows in execution_output carry
-- their seq, so a line is stored once and serves both /output and replay. seq values
-- are assigned by the store's writer inside the commit, increasing over the daemon's
-- whole life across both tables.

CREATE TABLE events (
    seq           INTEGER PRIMARY KEY,
    type          TEXT NOT NULL,
    execution_id  INTEGER,
    approval_id   INTEGER,
    session_id    INTEGER,
    json          TEXT NOT NULL      -- the envelope, as delivered
);
CREATE INDEX events_by_execution ON events (execution_id, seq) WHERE execution_id IS NOT NULL;
CREATE INDEX events_by_session ON events (session_id, seq) WHERE session_id IS NOT NULL;

ALTER TABLE execution_output ADD COLUMN seq INTEGER;
CREATE UNIQUE INDEX execution_output_by_seq ON execution_output (seq);
