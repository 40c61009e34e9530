-- A final execution as the API shows it, written when it becomes final (and patched when
-- its end snapshot lands), so that lists of past executions are served without decoding
-- and serialising every row. NULL for executions that are not final, and for those made
-- final by recovery after a crash (they are decoded from their columns).
ALTER TABLE executions ADD COLUMN json TEXT;
