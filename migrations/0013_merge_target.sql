-- The branch an isolated execution's base came from: where a merge of its work goes
-- unless told otherwise (NULL: a detached HEAD or a commit that is no branch).

ALTER TABLE executions ADD COLUMN base_branch TEXT;
