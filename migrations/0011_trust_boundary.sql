-- The trust boundary. Who asked for an approval (only an execution's own `gate`
-- approval releases it), how each execution's processes are confined, and the SHA-256
-- of its agent token (the token itself is never stored), by which the processes it
-- left behind are found after a crash.

ALTER TABLE approvals ADD COLUMN kind TEXT NOT NULL DEFAULT 'owner' CHECK (kind IN ('gate', 'agent', 'owner'));
UPDATE approvals SET kind = 'gate' WHERE id IN (SELECT approval_id FROM executions WHERE approval_id IS NOT NULL);

ALTER TABLE executions ADD COLUMN sandbox TEXT;          -- NULL: from before sandboxes (off)
ALTER TABLE executions ADD COLUMN agent_token_hash TEXT; -- hex SHA-256, set before its process spawns

ALTER TABLE profiles ADD COLUMN sandbox TEXT NOT NULL DEFAULT 'protect-data'
    CHECK (sandbox IN ('protect-data', 'workspace-write', 'off'));
