-- Sessions: multi-turn conversations with one profile in one place. A user message
-- with no execution yet waits for its turn (the queue survives restarts).

CREATE TABLE sessions (
    id                 INTEGER PRIMARY KEY,
    title              TEXT NOT NULL,
    workspace          TEXT,
    cwd                TEXT NOT NULL,
    profile            TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('idle', 'running', 'closed')),
    session_uuid       TEXT NOT NULL,
    turns              INTEGER NOT NULL DEFAULT 0,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    last_execution_id  INTEGER
);

CREATE TABLE session_messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id    INTEGER NOT NULL REFERENCES sessions (id),
    role          TEXT NOT NULL CHECK (role IN ('user', 'agent')),
    content       TEXT NOT NULL,
    execution_id  INTEGER,
    created_at    TEXT NOT NULL
);
CREATE INDEX session_messages_by_session ON session_messages (session_id, id);
