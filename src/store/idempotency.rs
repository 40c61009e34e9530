//! Stored responses of POSTs made with an `Idempotency-Key` (the HTTP layer's
//! `idempotency` middleware reads and writes them), kept for 24 h. A create remembers
//! its key in its own transaction ([`Claim::remember`]), so a crash between the create's
//! commit and its response can never let a retry run it twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::{format_ts, now};

/// How long a key is remembered.
pub const KEPT_FOR: chrono::Duration = chrono::Duration::hours(24);

/// A keyed request being answered: handed by the middleware to the handler, which hands
/// it to the actor whose write creates something.
#[derive(Debug, Clone)]
pub struct Claim {
    pub key: String,
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    remembered: Arc<AtomicBool>,
}

impl Claim {
    pub fn new(key: String, method: String, path: String, body: Vec<u8>) -> Self {
        Claim { key, method, path, body, remembered: Arc::default() }
    }

    /// Remembers `response` (JSON, with `status`) for the key inside the write that
    /// creates it: both commit, or neither.
    pub fn remember(&self, conn: &Connection, status: u16, response: &impl serde::Serialize) -> rusqlite::Result<()> {
        let response =
            serde_json::to_vec(response).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let at = now();
        put(conn, &self.answered(status, Some("application/json".into()), response), at, at - KEPT_FOR)?;
        self.remembered.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether a create remembered this key in its own transaction.
    pub fn is_remembered(&self) -> bool {
        self.remembered.load(Ordering::Acquire)
    }

    pub fn answered(&self, status: u16, content_type: Option<String>, response: Vec<u8>) -> Remembered {
        let Claim { key, method, path, body, .. } = self.clone();
        Remembered { key, method, path, body, status, content_type, response }
    }
}

/// A request and the response it got.
#[derive(Debug, Clone)]
pub struct Remembered {
    pub key: String,
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    pub status: u16,
    pub content_type: Option<String>,
    pub response: Vec<u8>,
}

/// The response remembered for `key`, if it is younger than `since`.
pub fn get(conn: &Connection, key: &str, since: DateTime<Utc>) -> rusqlite::Result<Option<Remembered>> {
    conn.prepare_cached(
        "SELECT key, method, path, body, status, content_type, response FROM idempotency_keys
         WHERE key = ?1 AND created_at >= ?2",
    )?
    .query_row(params![key, format_ts(&since)], |row| {
        Ok(Remembered {
            key: row.get(0)?,
            method: row.get(1)?,
            path: row.get(2)?,
            body: row.get(3)?,
            status: row.get::<_, i64>(4)? as u16,
            content_type: row.get(5)?,
            response: row.get(6)?,
        })
    })
    .optional()
}

/// Remembers a response (replacing an expired one of the same key) and forgets those
/// older than `expired_before`.
pub fn put(
    conn: &Connection,
    remembered: &Remembered,
    at: DateTime<Utc>,
    expired_before: DateTime<Utc>,
) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?.execute([format_ts(&expired_before)])?;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (key, method, path, body, status, content_type, response, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        remembered.key,
        remembered.method,
        remembered.path,
        remembered.body,
        remembered.status as i64,
        remembered.content_type,
        remembered.response,
        format_ts(&at),
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn claim(key: &str) -> Claim {
        Claim::new(key.into(), "POST".into(), "/api/v1/workspaces".into(), b"{}".to_vec())
    }

    fn workspaces(conn: &Connection) -> rusqlite::Result<i64> {
        conn.query_row("SELECT count(*) FROM workspaces", [], |row| row.get(0))
    }

    /// The key commits with the create it answers, or not at all: no later write is
    /// needed for a replay, and a create that fails leaves no key behind.
    #[actix::test]
    async fn a_claim_commits_with_its_create_or_not_at_all() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Store::open(&dir.path().join("w.db")).expect("a store");
        let (kept, lost) = (claim("kept"), claim("lost"));
        let remembered = kept.clone();
        store
            .write("create", move |c| {
                crate::store::catalog::insert_workspace(c, "a", "/tmp", now())?;
                remembered.remember(c, 201, &serde_json::json!({"id": 1}))
            })
            .await
            .expect("committed");
        assert!(kept.is_remembered());
        let forgotten = lost.clone();
        let failed: Result<(), _> = store
            .write("create that fails", move |c| {
                crate::store::catalog::insert_workspace(c, "b", "/tmp", now())?;
                forgotten.remember(c, 201, &serde_json::json!({"id": 2}))?;
                Err::<(), _>(rusqlite::Error::QueryReturnedNoRows)
            })
            .await;
        assert!(failed.is_err());
        let since = now() - KEPT_FOR;
        let (found, missing, count) = store
            .read("look", move |c| Ok((get(c, "kept", since)?, get(c, "lost", since)?, workspaces(c)?)))
            .await
            .expect("read");
        let found = found.expect("the committed create's key");
        assert_eq!((found.status, found.response.as_slice()), (201, br#"{"id":1}"#.as_slice()));
        assert!(missing.is_none(), "the failed create left its key behind");
        assert_eq!(count, 1, "the failed create left its row behind");
    }
}
