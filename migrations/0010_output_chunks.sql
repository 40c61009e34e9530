-- Output is stored in chunks: the lines of one pipe read of one stream (at most 256) in
-- one row, so that a flood costs the writer one row and three index entries per chunk
-- instead of per line. A chunk's lines are numbered first_n, first_n + 1, … and their
-- events' seqs are first_seq, first_seq + 1, … (both are handed out in the order the
-- chunks are stored, so within an execution line order is seq order).

CREATE TABLE output_chunks (
    execution_id  INTEGER NOT NULL,
    first_n       INTEGER NOT NULL,
    lines         INTEGER NOT NULL CHECK (lines BETWEEN 1 AND 256),
    first_seq     INTEGER,           -- NULL for output stored before lines had seqs
    stream        TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    ts            TEXT NOT NULL,     -- when the chunk was read
    text          TEXT NOT NULL,     -- the lines joined by '\n' (a line never holds one)
    PRIMARY KEY (execution_id, first_n)
) WITHOUT ROWID;
CREATE UNIQUE INDEX output_chunks_by_seq ON output_chunks (first_seq);
CREATE INDEX output_chunks_by_execution_seq ON output_chunks (execution_id, first_seq);

-- What was stored line by line becomes chunks of one line.
INSERT INTO output_chunks (execution_id, first_n, lines, first_seq, stream, ts, text)
    SELECT execution_id, n, 1, seq, stream, ts, text FROM execution_output;
DROP TABLE execution_output;
