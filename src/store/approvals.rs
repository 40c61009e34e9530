//! Rows of approvals. The ApprovalArbiter writes them; the HTTP read side lists them.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::catalog::ts_column;
use crate::domain::Word;
use crate::domain::{format_ts, Approval, ApprovalId, ApprovalKind, ApprovalStatus, Decision};

const COLUMNS: &str = "id, status, title, details, source, execution_id, session_id, created_at, expires_at, \
     default_decision, decided_by, decided_at, reason, kind";

fn conversion(column: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, what.into())
}

fn approval_row(row: &Row<'_>) -> rusqlite::Result<Approval> {
    let status: String = row.get(1)?;
    let details: String = row.get(3)?;
    let default: String = row.get(9)?;
    let kind: String = row.get(13)?;
    Ok(Approval {
        kind: ApprovalKind::parse(&kind).ok_or_else(|| conversion(13, kind))?,
        id: row.get(0)?,
        status: ApprovalStatus::parse(&status).ok_or_else(|| conversion(1, status))?,
        title: row.get(2)?,
        details: serde_json::from_str(&details).map_err(|e| conversion(3, e.to_string()))?,
        source: row.get(4)?,
        execution_id: row.get(5)?,
        session_id: row.get(6)?,
        created_at: ts_column(row, 7)?,
        expires_at: ts_column(row, 8)?,
        default: Decision::parse(&default).ok_or_else(|| conversion(9, default))?,
        decided_by: row.get(10)?,
        decided_at: match row.get_ref(11)? {
            rusqlite::types::ValueRef::Null => None,
            _ => Some(ts_column(row, 11)?),
        },
        reason: row.get(12)?,
    })
}

pub fn insert(conn: &Connection, approval: &Approval) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO approvals ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    ))?
    .execute(params![
        approval.id,
        approval.status.as_str(),
        approval.title,
        approval.details.to_string(),
        approval.source,
        approval.execution_id,
        approval.session_id,
        format_ts(&approval.created_at),
        format_ts(&approval.expires_at),
        approval.default.as_str(),
        approval.decided_by,
        approval.decided_at.as_ref().map(format_ts),
        approval.reason,
        approval.kind.as_str(),
    ])?;
    Ok(())
}

/// Records a pending approval's end (decided, expired or cancelled).
pub fn settle(conn: &Connection, approval: &Approval) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE approvals SET status = ?2, decided_by = ?3, decided_at = ?4, reason = ?5 WHERE id = ?1 AND status = ?6",
    )?
    .execute(params![
        approval.id,
        approval.status.as_str(),
        approval.decided_by,
        approval.decided_at.as_ref().map(format_ts),
        approval.reason,
        ApprovalStatus::Pending.as_str()
    ])?;
    Ok(())
}

pub fn get(conn: &Connection, id: ApprovalId) -> rusqlite::Result<Option<Approval>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"))?
        .query_row([id], approval_row)
        .optional()
}

/// Newest first, optionally of one status and one execution, after `before` (an id),
/// at most `limit`.
pub fn list(
    conn: &Connection,
    status: Option<ApprovalStatus>,
    execution_id: Option<i64>,
    before: Option<ApprovalId>,
    limit: usize,
) -> rusqlite::Result<Vec<Approval>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR id < ?2)
             AND (?4 IS NULL OR execution_id = ?4)
         ORDER BY id DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![status.map(|s| s.as_str()), before, limit as i64, execution_id], approval_row)?;
    rows.collect()
}

pub fn pending(conn: &Connection) -> rusqlite::Result<Vec<Approval>> {
    let pending = ApprovalStatus::sql(&[ApprovalStatus::Pending]);
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM approvals WHERE status = {pending} ORDER BY id"))?;
    let rows = stmt.query_map([], approval_row)?;
    rows.collect()
}

/// Pending approvals of the executions that were running or paused (at a restart after a
/// crash, before those are interrupted).
pub fn pending_of_unfinished_executions(conn: &Connection) -> rusqlite::Result<Vec<Approval>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE status = {} AND execution_id IN
             (SELECT id FROM executions WHERE status IN ({})) ORDER BY id",
        ApprovalStatus::sql(&[ApprovalStatus::Pending]),
        crate::domain::ExecutionStatus::sql(&super::executions::WITH_PROCESS)
    ))?;
    let rows = stmt.query_map([], approval_row)?;
    rows.collect()
}

pub fn max_id(conn: &Connection) -> rusqlite::Result<ApprovalId> {
    conn.query_row("SELECT coalesce(max(id), 0) FROM approvals", [], |r| r.get(0))
}

/// How many approvals there are of each status.
pub fn count_by_status(conn: &Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut stmt = conn.prepare_cached("SELECT status, count(*) FROM approvals GROUP BY status ORDER BY status")?;
    let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?;
    rows.collect()
}
