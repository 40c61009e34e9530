//! `ExecutionReader`: the read side of executions for the HTTP layer. Executions the
//! monitor still works on come from its read model (always current); the rest, and
//! output lines, come from the database. It never writes and never asks the actor.
//! The first page of a list is kept while nothing can have changed it ([`CachedPage`]).

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{LiveExecutions, MonitorError};
use crate::domain::{Execution, ExecutionFilter, ExecutionId, ExecutionStatus, NewExecution, OutputLine};
use crate::store::Store;
use crate::store::{agent_activity, executions as rows};

/// A list page's JSON body being written: items as they come (stored JSON is copied,
/// not parsed), then the cursor.
struct PageBody {
    body: String,
    limit: usize,
    seen: usize,
    items: usize,
    more: bool,
    /// The last id the page covered (the next page starts after it).
    last: Option<ExecutionId>,
}

impl PageBody {
    fn new(limit: usize) -> Self {
        PageBody { body: String::from("{\"items\":["), limit, seen: 0, items: 0, more: false, last: None }
    }

    /// Whether the page takes another row (one more than `limit` says there are more).
    fn room(&mut self) -> bool {
        self.seen += 1;
        self.seen <= self.limit
    }

    fn push_json(&mut self, json: &str, status: ExecutionStatus, statuses: &[ExecutionStatus]) {
        if !statuses.is_empty() && !statuses.contains(&status) {
            return;
        }
        if self.items > 0 {
            self.body.push(',');
        }
        self.body.push_str(json);
        self.items += 1;
    }

    fn push_serialized(&mut self, execution: &Execution, statuses: &[ExecutionStatus]) -> rusqlite::Result<()> {
        let json =
            serde_json::to_string(execution).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        self.push_json(&json, execution.status, statuses);
        Ok(())
    }

    fn finish(mut self) -> String {
        self.body.push_str("],\"next_cursor\":");
        match (self.more, self.last) {
            (true, Some(id)) => {
                self.body.push('"');
                self.body.push_str(&id.to_string());
                self.body.push('"');
            }
            _ => self.body.push_str("null"),
        }
        self.body.push('}');
        self.body
    }
}

/// The last first page of a list, kept while nothing can have changed it: no execution
/// is in the read model (every one is stored as it is) and the store has committed
/// nothing since the page was read. Dashboards polling the list then cost a copy of an
/// `Arc`, not a query.
struct CachedPage {
    filter: ExecutionFilter,
    limit: usize,
    commits: u64,
    body: Bytes,
}

/// What was read, with when retention removed what it was read from (if it did).
pub type Pruned<T> = (T, Option<chrono::DateTime<chrono::Utc>>);

#[derive(Clone)]
pub struct ExecutionReader {
    live: LiveExecutions,
    store: Store,
    first_page: Arc<Mutex<Option<CachedPage>>>,
}

impl ExecutionReader {
    pub fn new(live: LiveExecutions, store: Store) -> Self {
        ExecutionReader { live, store, first_page: Arc::default() }
    }

    fn cached_first_page(&self, filter: &ExecutionFilter, limit: usize, commits: u64) -> Option<Bytes> {
        let cached = self.first_page.lock().ok()?;
        let page = cached.as_ref()?;
        (page.commits == commits && page.limit == limit && &page.filter == filter).then(|| page.body.clone())
    }

    pub async fn get(&self, id: ExecutionId) -> Result<Execution, MonitorError> {
        if let Some(execution) = self.live.get(&id) {
            return Ok(execution.clone());
        }
        self.store.read("get execution", move |c| rows::get(c, id)).await?.ok_or(MonitorError::UnknownExecution(id))
    }

    /// A page of executions, newest first, as the body `{"items":[…],"next_cursor":…}`:
    /// final executions as the JSON stored when they ended, the others from the read
    /// model (which may be a moment ahead of the database) or their row, filtered again
    /// on status. The body is made on the database's thread, in one piece.
    pub async fn list_json(
        &self,
        filter: ExecutionFilter,
        before: Option<ExecutionId>,
        limit: usize,
    ) -> Result<Bytes, MonitorError> {
        let statuses = filter.status.0.clone();
        // Read before the page: a commit while it is being read makes it stale at once.
        let commits = self.store.commits();
        let cacheable = before.is_none() && self.live.is_empty();
        if cacheable {
            if let Some(body) = self.cached_first_page(&filter, limit, commits) {
                return Ok(body);
            }
        }
        let (live, key) = (self.live.clone(), filter.clone());
        let body = self
            .store
            .read("list executions", move |c| {
                let mut page = PageBody::new(limit);
                rows::list(c, &filter, &statuses, before, limit + 1, |id, status, stored| {
                    if !page.room() {
                        page.more = true;
                        return Ok(());
                    }
                    page.last = Some(id);
                    match (live.get(&id), stored) {
                        (Some(shown), _) => page.push_serialized(&shown, &statuses)?,
                        (None, Some(json)) => page.push_json(json, status, &statuses),
                        (None, None) => {
                            if let Some(execution) = rows::get(c, id)? {
                                page.push_serialized(&execution, &statuses)?;
                            }
                        }
                    }
                    Ok(())
                })?;
                Ok(page.finish())
            })
            .await?;
        let body = Bytes::from(body);
        if cacheable {
            if let Ok(mut cached) = self.first_page.lock() {
                *cached = Some(CachedPage { filter: key, limit, commits, body: body.clone() });
            }
        }
        Ok(body)
    }

    /// Output lines after `after`; an unknown execution is a 404.
    /// With when retention removed them, if it did.
    pub async fn output(
        &self,
        id: ExecutionId,
        after: u64,
        limit: usize,
    ) -> Result<Pruned<Vec<OutputLine>>, MonitorError> {
        let pruned_at = self.get(id).await?.pruned_at;
        Ok((self.store.read("read output", move |c| rows::output(c, id, after, limit)).await?, pruned_at))
    }

    /// The last `count` output lines, in order, with when retention removed them.
    pub async fn output_tail(&self, id: ExecutionId, count: usize) -> Result<Pruned<Vec<OutputLine>>, MonitorError> {
        let pruned_at = self.get(id).await?.pruned_at;
        Ok((self.store.read("read output tail", move |c| rows::output_tail(c, id, count)).await?, pruned_at))
    }

    /// A page of an execution's transcript after `after` (a seq), as the body
    /// `{"items":[…],"next_cursor":…}` made of the stored events; an unknown execution
    /// is a 404.
    pub async fn transcript_json(&self, id: ExecutionId, after: u64, limit: usize) -> Result<String, MonitorError> {
        let pruned_at = self.get(id).await?.pruned_at;
        let mut entries =
            self.store.read("read transcript", move |c| agent_activity::transcript(c, id, after, limit + 1)).await?;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let mut body = String::from("{\"items\":[");
        for (i, (_, json)) in entries.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(json);
        }
        body.push_str("],\"next_cursor\":");
        match entries.last().filter(|_| more) {
            Some((seq, _)) => body.push_str(&format!("\"{seq}\"")),
            None => body.push_str("null"),
        }
        if let Some(at) = pruned_at {
            body.push_str(&format!(",\"pruned_at\":\"{}\"", crate::domain::format_ts(&at)));
        }
        body.push('}');
        Ok(body)
    }

    /// The request an execution was made from, for a retry.
    pub async fn request_of(&self, id: ExecutionId) -> Result<NewExecution, MonitorError> {
        self.store
            .read("read request", move |c| rows::request_of(c, id))
            .await?
            .ok_or(MonitorError::UnknownExecution(id))
    }
}
