-- Approvals: questions for a human. The ApprovalArbiter assigns ids and is the only
-- writer; the first decision is stored before anyone is told.

CREATE TABLE approvals (
    id                INTEGER PRIMARY KEY,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'cancelled')),
    title             TEXT NOT NULL,
    details           TEXT NOT NULL,            -- JSON
    source            TEXT NOT NULL,
    execution_id      INTEGER,
    session_id        INTEGER,
    created_at        TEXT NOT NULL,
    expires_at        TEXT NOT NULL,
    default_decision  TEXT NOT NULL CHECK (default_decision IN ('approve', 'deny')),
    decided_by        TEXT,
    decided_at        TEXT,
    reason            TEXT
);
CREATE INDEX approvals_by_status ON approvals (status, id);
CREATE INDEX approvals_by_execution ON approvals (execution_id) WHERE execution_id IS NOT NULL;
