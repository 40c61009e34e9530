//! Rows of sessions and their messages. The SessionKeeper writes them; the HTTP read side
//! lists them.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::catalog::ts_column;
use crate::domain::Word;
use crate::domain::{format_ts, ExecutionId, Role, Session, SessionId, SessionMessage, SessionStatus, Tokens};

const COLUMNS: &str =
    "id, title, workspace, cwd, profile, status, session_uuid, turns, created_at, updated_at, last_execution_id, \
     agent_session_id, conversation_tokens";

fn session_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    let status: String = row.get(5)?;
    Ok(Session {
        id: row.get(0)?,
        title: row.get(1)?,
        workspace: row.get(2)?,
        cwd: row.get(3)?,
        profile: row.get(4)?,
        status: SessionStatus::parse(&status)
            .ok_or_else(|| rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, status.into()))?,
        session_uuid: row.get(6)?,
        turns: row.get(7)?,
        created_at: ts_column(row, 8)?,
        updated_at: ts_column(row, 9)?,
        last_execution_id: row.get(10)?,
        agent_session_id: row.get(11)?,
        conversation_tokens: row.get::<_, Option<String>>(12)?.and_then(|text| serde_json::from_str(&text).ok()),
    })
}

fn message_row(row: &Row<'_>) -> rusqlite::Result<SessionMessage> {
    let role: String = row.get(2)?;
    Ok(SessionMessage {
        id: row.get(0)?,
        session_id: row.get(1)?,
        role: if role == "agent" { Role::Agent } else { Role::User },
        content: row.get(3)?,
        execution_id: row.get(4)?,
        created_at: ts_column(row, 5)?,
    })
}

pub fn insert(conn: &Connection, session: &Session) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO sessions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, NULL)"
    ))?
    .execute(params![
        session.id,
        session.title,
        session.workspace,
        session.cwd,
        session.profile,
        session.status.as_str(),
        session.session_uuid,
        session.turns,
        format_ts(&session.created_at),
        format_ts(&session.updated_at),
        session.last_execution_id,
        session.agent_session_id,
    ])?;
    Ok(())
}

/// Stores the changeable fields: title, status, turns, last execution, the agent's
/// conversation id.
pub fn update(conn: &Connection, session: &Session) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE sessions SET title = ?2, status = ?3, turns = ?4, updated_at = ?5, last_execution_id = ?6,
             agent_session_id = ?7 WHERE id = ?1",
    )?
    .execute(params![
        session.id,
        session.title,
        session.status.as_str(),
        session.turns,
        format_ts(&session.updated_at),
        session.last_execution_id,
        session.agent_session_id
    ])?;
    Ok(())
}

/// Keeps the agent's own conversation id (and what it had used) for the session's next
/// turn.
pub fn set_agent_conversation(
    conn: &Connection,
    id: SessionId,
    agent_session_id: &str,
    tokens: Option<Tokens>,
) -> rusqlite::Result<()> {
    let tokens = tokens
        .map(|t| serde_json::to_string(&t))
        .transpose()
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.prepare_cached("UPDATE sessions SET agent_session_id = ?2, conversation_tokens = ?3 WHERE id = ?1")?
        .execute(params![id, agent_session_id, tokens])?;
    Ok(())
}

pub fn get(conn: &Connection, id: SessionId) -> rusqlite::Result<Option<Session>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"))?
        .query_row([id], session_row)
        .optional()
}

/// Newest first, optionally one status and one workspace, after `before`.
pub fn list(
    conn: &Connection,
    status: Option<SessionStatus>,
    workspace: Option<&str>,
    before: Option<SessionId>,
    limit: usize,
) -> rusqlite::Result<Vec<Session>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM sessions WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workspace = ?2)
             AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
    ))?;
    let rows = stmt.query_map(params![status.map(|s| s.as_str()), workspace, before, limit as i64], session_row)?;
    rows.collect()
}

/// Sessions not closed, for the keeper at start.
pub fn open(conn: &Connection) -> rusqlite::Result<Vec<Session>> {
    let closed = SessionStatus::sql(&[SessionStatus::Closed]);
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM sessions WHERE status != {closed} ORDER BY id"))?;
    let rows = stmt.query_map([], session_row)?;
    rows.collect()
}

pub fn max_id(conn: &Connection) -> rusqlite::Result<SessionId> {
    conn.query_row("SELECT coalesce(max(id), 0) FROM sessions", [], |r| r.get(0))
}

pub fn insert_message(
    conn: &Connection,
    session_id: SessionId,
    role: Role,
    content: &str,
    execution_id: Option<ExecutionId>,
    at: DateTime<Utc>,
) -> rusqlite::Result<SessionMessage> {
    let role_text = role.as_str();
    conn.prepare_cached(
        "INSERT INTO session_messages (session_id, role, content, execution_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![session_id, role_text, content, execution_id, format_ts(&at)])?;
    Ok(SessionMessage {
        id: conn.last_insert_rowid(),
        session_id,
        role,
        content: content.to_owned(),
        execution_id,
        created_at: at,
    })
}

pub fn set_message_execution(conn: &Connection, message_id: i64, execution_id: ExecutionId) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE session_messages SET execution_id = ?2 WHERE id = ?1")?
        .execute(params![message_id, execution_id])?;
    Ok(())
}

/// A session's messages in order, after `after` (a message id), at most `limit`.
pub fn messages(
    conn: &Connection,
    session_id: SessionId,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<SessionMessage>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, session_id, role, content, execution_id, created_at FROM session_messages
         WHERE session_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![session_id, after, limit as i64], message_row)?;
    rows.collect()
}

/// User messages still waiting for their turn, oldest first.
pub fn waiting(conn: &Connection) -> rusqlite::Result<Vec<SessionMessage>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT m.id, m.session_id, m.role, m.content, m.execution_id, m.created_at FROM session_messages m
         JOIN sessions s ON s.id = m.session_id
         WHERE m.role = {} AND m.execution_id IS NULL AND s.status != {} ORDER BY m.id",
        Role::sql(&[Role::User]),
        SessionStatus::sql(&[SessionStatus::Closed])
    ))?;
    let rows = stmt.query_map([], message_row)?;
    rows.collect()
}

/// Whether a turn's reply is stored already.
pub fn has_reply(conn: &Connection, execution_id: ExecutionId) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM session_messages WHERE role = ?2 AND execution_id = ?1",
        params![execution_id, Role::Agent.as_str()],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

/// The stdout of an execution, lines joined: a turn's reply.
pub fn stdout_of(conn: &Connection, execution_id: ExecutionId) -> rusqlite::Result<String> {
    // A chunk's text is its lines joined by '\n' already.
    let mut stmt = conn.prepare_cached(
        "SELECT text FROM output_chunks WHERE execution_id = ?1 AND stream = 'stdout' ORDER BY first_n",
    )?;
    let chunks: rusqlite::Result<Vec<String>> = stmt.query_map([execution_id], |row| row.get(0))?.collect();
    Ok(chunks?.join("\n"))
}
