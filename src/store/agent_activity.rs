//! Agent activity rows: each agent execution's summary, its agent events (in the event
//! log, as `agent.*`), and what each provider spent per UTC day. The capture threads
//! write them through the store with the output lines they were read from; the HTTP
//! read side reads transcripts and spend.

use rusqlite::{params, Connection, OptionalExtension};

use super::events::{EventLog, OutputSource};
use crate::agent::Batch;
use crate::domain::{AgentSummary, ExecutionId, NewEvent, Spend};

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Stores an execution's summary (made or changed).
pub fn store_summary(conn: &Connection, id: ExecutionId, summary: &AgentSummary) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO agent_activity (execution_id, summary) VALUES (?1, ?2)
         ON CONFLICT (execution_id) DO UPDATE SET summary = ?2",
    )?
    .execute(params![id.0, serde_json::to_string(summary).map_err(json_err)?])?;
    Ok(())
}

/// An execution's summary; none for a `text` execution.
pub fn summary(conn: &Connection, id: ExecutionId) -> rusqlite::Result<Option<AgentSummary>> {
    let text: Option<String> = conn
        .prepare_cached("SELECT summary FROM agent_activity WHERE execution_id = ?1")?
        .query_row([id.0], |row| row.get(0))
        .optional()?;
    text.map(|text| {
        serde_json::from_str(&text)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
    })
    .transpose()
}

/// Where a batch of agent activity is counted: its execution and, for spend, its
/// provider and UTC day.
pub struct SpendAccount<'a> {
    pub provider: &'a str,
    /// `YYYY-MM-DD`, UTC.
    pub day: &'a str,
}

/// Records what a read of an agent's output made: its events (each gets its `seq`), the
/// summary if it changed, and what it spent on its provider's day.
pub fn record(
    conn: &Connection,
    log: &mut EventLog,
    source: &OutputSource,
    account: &SpendAccount<'_>,
    batch: &Batch,
) -> rusqlite::Result<()> {
    for event in &batch.events {
        log.record(
            conn,
            NewEvent {
                execution_id: Some(source.execution_id),
                session_id: source.session_id,
                workspace: source.workspace.clone(),
                ..NewEvent::new(event.event_type(), event.data())
            },
        )?;
    }
    if let Some(summary) = &batch.summary {
        store_summary(conn, source.execution_id, summary)?;
    }
    if !batch.spent.is_zero() {
        let spent = &batch.spent;
        conn.prepare_cached(
            "INSERT INTO provider_spend (provider, day, cost_usd, input_tokens, output_tokens) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (provider, day) DO UPDATE SET cost_usd = cost_usd + ?3,
                 input_tokens = min(input_tokens + ?4, 9223372036854775807),
                 output_tokens = min(output_tokens + ?5, 9223372036854775807)",
        )?
        .execute(params![
            account.provider,
            account.day,
            spent.cost_usd.unwrap_or(0.0),
            spent.tokens().all_input().min(i64::MAX as u64) as i64,
            spent.output_tokens.min(i64::MAX as u64) as i64,
        ])?;
    }
    Ok(())
}

/// What each provider spent on one UTC day (`YYYY-MM-DD`).
pub fn spend_on(conn: &Connection, day: &str) -> rusqlite::Result<Vec<(String, Spend)>> {
    let mut stmt = conn
        .prepare_cached("SELECT provider, cost_usd, input_tokens, output_tokens FROM provider_spend WHERE day = ?1")?;
    let rows = stmt.query_map([day], |row| {
        Ok((
            row.get(0)?,
            Spend {
                cost_usd: row.get(1)?,
                input_tokens: row.get::<_, i64>(2)? as u64,
                output_tokens: row.get::<_, i64>(3)? as u64,
            },
        ))
    })?;
    rows.collect()
}

/// An execution's agent events after `after` (a seq), in order, at most `limit`: each
/// as its stored envelope JSON, with its seq.
pub fn transcript(
    conn: &Connection,
    id: ExecutionId,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Vec<(u64, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, json FROM events
         WHERE execution_id = ?1 AND seq > ?2 AND type GLOB 'agent.*'
         ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![id.0, after.min(i64::MAX as u64) as i64, limit as i64], |row| {
        Ok((row.get::<_, i64>(0)? as u64, row.get(1)?))
    })?;
    rows.collect()
}

/// The text of an execution's last `agent.message`, if it said anything.
pub fn last_message(conn: &Connection, id: ExecutionId) -> rusqlite::Result<Option<String>> {
    let json: Option<String> = conn
        .prepare_cached(
            "SELECT json FROM events WHERE execution_id = ?1 AND type = 'agent.message' ORDER BY seq DESC LIMIT 1",
        )?
        .query_row([id.0], |row| row.get(0))
        .optional()?;
    Ok(json.and_then(|json| {
        let envelope: serde_json::Value = serde_json::from_str(&json).ok()?;
        envelope.get("data")?.get("text")?.as_str().map(str::to_owned)
    }))
}
