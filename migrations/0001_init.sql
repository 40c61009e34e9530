-- Workspaces, and the profiles and provider limits added or changed over the API.
-- Profiles and providers from the config file live in memory only; the API-made ones
-- are stored here so they survive a restart.

CREATE TABLE workspaces (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    path        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE profiles (
    name              TEXT PRIMARY KEY,
    provider          TEXT NOT NULL,
    command           TEXT NOT NULL,   -- JSON array of argv template strings
    continue_command  TEXT,            -- JSON array, or NULL
    approval          TEXT NOT NULL CHECK (approval IN ('never', 'always')),
    timeout_s         INTEGER,
    env               TEXT NOT NULL,   -- JSON object
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

CREATE TABLE providers (
    name             TEXT PRIMARY KEY,
    max_concurrent   INTEGER NOT NULL CHECK (max_concurrent >= 0),
    rate_per_minute  INTEGER NOT NULL CHECK (rate_per_minute >= 0),
    updated_at       TEXT NOT NULL
);
