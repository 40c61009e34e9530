//! Stored responses of POSTs made with an `Idempotency-Key` (the HTTP layer's
//! `idempotency` middleware reads and writes them), kept for 24 h.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::format_ts;

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
