//! `ExecutionReader`: the read side of executions for the HTTP layer. Executions the
//! monitor still works on come from its read model (always current); the rest, and
//! output lines, come from the database. It never writes and never asks the actor.

use crate::domain::{Execution, ExecutionFilter, ExecutionId, ExecutionStatus, NewExecution, OutputLine};
use crate::store::{executions as rows, Store};

use super::{LiveExecutions, MonitorError};

#[derive(Clone)]
pub struct ExecutionReader {
    live: LiveExecutions,
    store: Store,
}

impl ExecutionReader {
    pub fn new(live: LiveExecutions, store: Store) -> Self {
        ExecutionReader { live, store }
    }

    pub async fn get(&self, id: ExecutionId) -> Result<Execution, MonitorError> {
        if let Some(execution) = self.live.get(&id) {
            return Ok(execution.clone());
        }
        self.store.read("get execution", move |c| rows::get(c, id)).await?.ok_or(MonitorError::UnknownExecution(id))
    }

    /// Newest first. Rows from the database are overlaid with the read model, which may
    /// be a moment ahead of it, and filtered again on status.
    pub async fn list(
        &self,
        filter: ExecutionFilter,
        before: Option<ExecutionId>,
        limit: usize,
    ) -> Result<(Vec<Execution>, bool), MonitorError> {
        let statuses = parse_statuses(filter.status.as_deref())?;
        let wanted = statuses.clone();
        let mut rows =
            self.store.read("list executions", move |c| rows::list(c, &filter, &wanted, before, limit + 1)).await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        for row in rows.iter_mut() {
            if let Some(live) = self.live.get(&row.id) {
                *row = live.clone();
            }
        }
        rows.retain(|e| statuses.is_empty() || statuses.contains(&e.status));
        Ok((rows, more))
    }

    /// Output lines after `after`; an unknown execution is a 404.
    pub async fn output(&self, id: ExecutionId, after: u64, limit: usize) -> Result<Vec<OutputLine>, MonitorError> {
        self.get(id).await?;
        Ok(self.store.read("read output", move |c| rows::output(c, id, after, limit)).await?)
    }

    /// The last `count` output lines, in order.
    pub async fn output_tail(&self, id: ExecutionId, count: usize) -> Result<Vec<OutputLine>, MonitorError> {
        self.get(id).await?;
        Ok(self.store.read("read output tail", move |c| rows::output_tail(c, id, count)).await?)
    }

    /// The request an execution was made from, for a retry.
    pub async fn request_of(&self, id: ExecutionId) -> Result<NewExecution, MonitorError> {
        self.store
            .read("read request", move |c| rows::request_of(c, id))
            .await?
            .ok_or(MonitorError::UnknownExecution(id))
    }
}

fn parse_statuses(text: Option<&str>) -> Result<Vec<ExecutionStatus>, MonitorError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(Vec::new()) };
    text.split(',')
        .map(|s| {
            ExecutionStatus::parse(s.trim_matches(' ')).ok_or_else(|| {
                let known: Vec<&str> = ExecutionStatus::ALL.iter().map(|s| s.as_str()).collect();
                MonitorError::BadQuery(format!("unknown status {s:?}; known: {}", known.join(", ")))
            })
        })
        .collect()
}
