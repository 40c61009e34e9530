//! A page of a list, as every list route answers and every client reads it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One page of a list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// An execution's output or transcript only: when retention removed it (the page is
    /// then empty). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl<T> Page<T> {
    /// A page from a query that fetched `limit + 1` rows: the extra row says there is
    /// more, and the last kept row's key is the cursor.
    pub fn from_overfetch(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Page<T> {
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(key)
        } else {
            None
        };
        Page { items, next_cursor, pruned_at: None }
    }
}
