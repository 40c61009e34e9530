-- Executions and their output. Ids are assigned by the ExecutionMonitor (it is the only
-- creator), so a new execution's argv can name its own id before it is stored.

CREATE TABLE executions (
    id               INTEGER PRIMARY KEY,
    status           TEXT NOT NULL,
    profile          TEXT NOT NULL,
    provider         TEXT NOT NULL,
    workspace        TEXT,              -- workspace name at creation; NULL for a plain cwd
    cwd              TEXT NOT NULL,
    prompt           TEXT NOT NULL,
    argv             TEXT NOT NULL,     -- JSON array, as run
    env              TEXT NOT NULL,     -- JSON object: the request's own env (for retry)
    timeout_s        INTEGER,
    exit_code        INTEGER,
    error            TEXT,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    retry_of         INTEGER,
    session_id       INTEGER,
    approval_id      INTEGER,
    queue_order      INTEGER NOT NULL,  -- FIFO order within the provider
    pid              INTEGER,           -- process group leader while running
    proc_start_ticks INTEGER            -- its start time, to recognise it after a crash
);
CREATE INDEX executions_by_status ON executions (status);
CREATE INDEX executions_by_provider_queue ON executions (provider, queue_order);

CREATE TABLE execution_output (
    execution_id  INTEGER NOT NULL,
    n             INTEGER NOT NULL,    -- 1-based, across stdout and stderr
    stream        TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    text          TEXT NOT NULL,
    ts            TEXT NOT NULL,
    PRIMARY KEY (execution_id, n)
) WITHOUT ROWID;
