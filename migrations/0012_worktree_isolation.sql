-- Worktree isolation: an execution can run in a git worktree of its own, on a branch of
-- its own, from a base (the user's work tree when `base_ref` is NULL, else that revision).

ALTER TABLE executions ADD COLUMN isolation TEXT NOT NULL DEFAULT 'none' CHECK (isolation IN ('none', 'worktree'));
ALTER TABLE executions ADD COLUMN base_ref TEXT; -- the revision asked for; NULL: the user's work tree
ALTER TABLE executions ADD COLUMN branch TEXT;   -- set once its worktree is made, NULL again once discarded
ALTER TABLE executions ADD COLUMN worktree TEXT; -- likewise
ALTER TABLE executions ADD COLUMN base TEXT;     -- the commit its branch starts at

ALTER TABLE profiles ADD COLUMN isolation TEXT NOT NULL DEFAULT 'none' CHECK (isolation IN ('none', 'worktree'));
