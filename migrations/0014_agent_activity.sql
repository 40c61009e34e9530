-- Agent activity (issue 21): what warden reads from the JSON streams of agents.

-- A profile's output format: `text`, or an agent's JSON stream.
ALTER TABLE profiles ADD COLUMN format TEXT NOT NULL DEFAULT 'text'
    CHECK (format IN ('text', 'claude-stream-json', 'codex-json', 'gemini-stream-json'));

-- One row per agent execution (none for `text`): its summary as the API shows it,
-- written with the agent events that changed it.
CREATE TABLE agent_activity (
    execution_id  INTEGER PRIMARY KEY,
    summary       TEXT NOT NULL
);

-- What each provider's agents spent, per UTC day: the sum of their `agent.usage`
-- events, written with them. Budgets are checked against it.
CREATE TABLE provider_spend (
    provider       TEXT NOT NULL,
    day            TEXT NOT NULL,     -- YYYY-MM-DD, UTC
    cost_usd       REAL NOT NULL DEFAULT 0,
    input_tokens   INTEGER NOT NULL DEFAULT 0,
    output_tokens  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, day)
) WITHOUT ROWID;

-- Daily budgets on a provider (NULL: none).
ALTER TABLE providers ADD COLUMN max_cost_usd_per_day REAL;
ALTER TABLE providers ADD COLUMN max_tokens_per_day INTEGER;

-- The agent's own conversation id, from a session's last turn that told one: the next
-- turn's `{agent_session_id}`.
ALTER TABLE sessions ADD COLUMN agent_session_id TEXT;
-- With what that conversation had used so far (JSON tokens), for agents that report
-- usage totals over a resumed conversation (Codex).
ALTER TABLE sessions ADD COLUMN conversation_tokens TEXT;
