-- The branch an isolated execution's base came from: where a merge of its work goes
-- unless told otherwise (NULL: a detached HEAD or a commit that is no branch).

ALTER TABLE executions ADD COLUMN base_branch TEXT;

-- The clean-up of old worktrees and a merge or discard (which forgets a branch for all
-- of a session's turns) look up the few isolated executions.
CREATE INDEX executions_worktree ON executions (worktree) WHERE worktree IS NOT NULL;
CREATE INDEX executions_branch ON executions (branch) WHERE branch IS NOT NULL;
