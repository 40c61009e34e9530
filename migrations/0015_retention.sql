-- Retention (issue 22): old final executions lose their output and events; their row
-- stays as the summary, and every seq range that was removed is recorded, so that a
-- replay or a history page across it says so instead of skipping it silently.

-- When the execution's output and events were pruned (NULL: they are all there).
ALTER TABLE executions ADD COLUMN pruned_at TEXT;

-- One row per execution whose events were removed, by a retention pass or a deletion.
-- Rows of one pass share `pass`, so an unnarrowed replay can tell of a pass as one range.
CREATE TABLE pruned_ranges (
    execution_id  INTEGER PRIMARY KEY,  -- the execution (its row is gone once deleted)
    session_id    INTEGER,
    pass          INTEGER NOT NULL,     -- the pass (or deletion) that removed them
    reason        TEXT NOT NULL CHECK (reason IN ('retention', 'deleted')),
    at            TEXT NOT NULL,
    from_seq      INTEGER NOT NULL,     -- the lowest and highest seq removed
    to_seq        INTEGER NOT NULL,
    output_lines  INTEGER NOT NULL,
    events        INTEGER NOT NULL,
    done          INTEGER NOT NULL DEFAULT 0  -- 1 once every row of it is gone
) WITHOUT ROWID;
CREATE INDEX pruned_ranges_by_pass ON pruned_ranges (pass);

-- Each pass's rows as one range (kept with them): what an unnarrowed replay is told.
CREATE TABLE pruned_passes (
    pass        INTEGER PRIMARY KEY,
    reason      TEXT NOT NULL,
    at          TEXT NOT NULL,
    from_seq    INTEGER NOT NULL,
    to_seq      INTEGER NOT NULL,
    executions  INTEGER NOT NULL,
    execution_id INTEGER            -- the one execution while it has one
);
CREATE INDEX pruned_passes_by_seq ON pruned_passes (to_seq, from_seq);
CREATE INDEX pruned_ranges_by_session ON pruned_ranges (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX pruned_ranges_unfinished ON pruned_ranges (done) WHERE done = 0;
-- Old final executions, oldest first, for retention's choice.
CREATE INDEX executions_by_finish ON executions (finished_at) WHERE pruned_at IS NULL;
