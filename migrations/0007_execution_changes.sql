-- What each execution changed in its git work tree: a JSON `ChangesSummary` (repo root,
-- HEAD, start and end tree ids, totals, snapshot error). NULL outside a git work tree.
ALTER TABLE executions ADD COLUMN changes TEXT;
