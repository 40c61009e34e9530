-- Responses to POSTs sent with an Idempotency-Key, replayed for 24 h when the same key
-- comes again with the same request (method, path and body).
CREATE TABLE idempotency_keys (
    key          TEXT PRIMARY KEY,
    method       TEXT NOT NULL,
    path         TEXT NOT NULL,
    body         BLOB NOT NULL,
    status       INTEGER NOT NULL,
    content_type TEXT,
    response     BLOB NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
