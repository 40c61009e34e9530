-- Replays and history narrowed to one execution read its output in seq order.
CREATE INDEX execution_output_by_execution_seq ON execution_output (execution_id, seq);
