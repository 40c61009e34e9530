//! The event log: `EventLog` lives in the writer thread, gives each recorded event the
//! next `seq` inside the commit and collects the events for delivery once committed.
//! `replay` reads events back in `seq` order for clients that reconnect.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{params, params_from_iter, Connection, ToSql};

use super::catalog::ts_column;
use crate::domain::{
    format_ts, now, Envelope, Event, EventFilter, ExecutionId, NewEvent, OutputLine, OutputStream, Priority,
};

/// What an execution's output events say about where they come from.
#[derive(Debug, Clone)]
pub struct OutputSource {
    pub execution_id: ExecutionId,
    pub session_id: Option<i64>,
    pub workspace: Option<String>,
}

/// Assigns `seq`s and remembers what the current batch recorded.
pub struct EventLog {
    next_seq: u64,
    recorded: Vec<Arc<Event>>,
}

/// Where a job started, so a failed job's events can be taken back.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    next_seq: u64,
    recorded: usize,
}

impl EventLog {
    pub(super) fn open(conn: &Connection) -> rusqlite::Result<EventLog> {
        Ok(EventLog { next_seq: last_seq(conn)? + 1, recorded: Vec::new() })
    }

    /// Records an event; it is delivered after the commit.
    pub fn record(&mut self, conn: &Connection, event: NewEvent) -> rusqlite::Result<u64> {
        let seq = self.next_seq;
        let envelope = Envelope {
            seq,
            ts: now(),
            kind: event.kind.to_owned(),
            priority: Priority::of(event.kind),
            execution_id: event.execution_id,
            approval_id: event.approval_id,
            session_id: event.session_id,
            workspace: event.workspace,
            data: event.data,
        };
        let recorded = Event::from_envelope(&envelope);
        conn.prepare_cached(
            "INSERT INTO events (seq, type, execution_id, approval_id, session_id, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            seq as i64,
            envelope.kind,
            envelope.execution_id.map(|e| e.0),
            envelope.approval_id,
            envelope.session_id,
            recorded.json(),
        ])?;
        self.next_seq += 1;
        self.recorded.push(Arc::new(recorded));
        Ok(seq)
    }

    /// Stores output lines; each is an `execution.output` event with its own `seq`. The
    /// lines come prepared (see [`PreparedOutput`]): the writer only binds them and gives
    /// their events a seq.
    pub fn record_output(&mut self, conn: &Connection, lines: &mut [PreparedOutput]) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO execution_output (execution_id, n, stream, text, ts, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for prepared in lines {
            let line = &prepared.line;
            let seq = self.next_seq;
            stmt.execute(params![
                prepared.execution_id.0,
                line.n as i64,
                line.stream.as_str(),
                line.text,
                prepared.stored_ts,
                seq as i64
            ])?;
            self.next_seq += 1;
            if let Some(mut event) = prepared.event.take() {
                if let Some(unshared) = Arc::get_mut(&mut event) {
                    unshared.seq = seq;
                }
                self.recorded.push(event);
            }
        }
        Ok(())
    }

    pub(super) fn mark(&self) -> Mark {
        Mark { next_seq: self.next_seq, recorded: self.recorded.len() }
    }

    /// Takes back what was recorded since `mark` (its job failed and was rolled back).
    pub(super) fn rollback_to(&mut self, mark: Mark) {
        self.next_seq = mark.next_seq;
        self.recorded.truncate(mark.recorded);
    }

    /// The committed batch's events, for delivery.
    pub(super) fn take(&mut self) -> Vec<Arc<Event>> {
        std::mem::take(&mut self.recorded)
    }
}

/// An output line made ready for the store's writer where it was read: its timestamp
/// as stored and its event (JSON after the seq, and the allocation itself), so that the
/// one writer thread neither serialises nor allocates per line. (Allocating on one
/// thread and freeing on another makes both wait on the allocator's locks.)
pub struct PreparedOutput {
    line: OutputLine,
    execution_id: ExecutionId,
    stored_ts: String,
    /// Taken by the writer, which gives it its seq.
    event: Option<Arc<Event>>,
}

impl PreparedOutput {
    pub fn new(line: OutputLine, source: &OutputSource) -> Self {
        let json_after_seq = output_json_after_seq(line.ts, line.n, line.stream, &line.text, source);
        let event = Arc::new(Event::output(0, source.execution_id, source.session_id, json_after_seq));
        PreparedOutput { stored_ts: format_ts(&line.ts), event: Some(event), execution_id: source.execution_id, line }
    }
}

/// An output event's envelope (as [`Envelope`] serialises it) from the field after
/// `seq` on: `,"ts":…,"type":"execution.output",…,"data":{"n":…,"stream":…,"text":…}}`.
fn output_json_after_seq(ts: DateTime<Utc>, n: u64, stream: OutputStream, text: &str, source: &OutputSource) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(text.len() + 160);
    out.extend_from_slice(b",\"ts\":");
    let _ = serde_json::to_writer(&mut out, &ts);
    out.extend_from_slice(b",\"type\":\"execution.output\",\"priority\":\"low\",\"execution_id\":");
    out.extend_from_slice(source.execution_id.0.to_string().as_bytes());
    if let Some(session) = source.session_id {
        out.extend_from_slice(b",\"session_id\":");
        out.extend_from_slice(session.to_string().as_bytes());
    }
    if let Some(workspace) = &source.workspace {
        out.extend_from_slice(b",\"workspace\":");
        let _ = serde_json::to_writer(&mut out, workspace);
    }
    out.extend_from_slice(b",\"data\":{\"n\":");
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b",\"stream\":\"");
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(b"\",\"text\":");
    let _ = serde_json::to_writer(&mut out, text);
    out.extend_from_slice(b"}}");
    // Only JSON text was written.
    String::from_utf8(out).unwrap_or_default()
}

/// The highest `seq` recorded so far (0 for a new database).
pub fn last_seq(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT max(coalesce((SELECT max(seq) FROM events), 0), coalesce((SELECT max(seq) FROM execution_output), 0))",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(|seq| seq as u64)
}

/// The seq of an execution's `execution.finished` event, once it has one.
pub fn finished_seq(conn: &Connection, id: ExecutionId) -> rusqlite::Result<Option<u64>> {
    use rusqlite::OptionalExtension;
    conn.query_row(
        "SELECT seq FROM events WHERE execution_id = ?1 AND type = 'execution.finished' ORDER BY seq DESC LIMIT 1",
        [id.0],
        |row| row.get::<_, i64>(0),
    )
    .optional()
    .map(|seq| seq.map(|s| s as u64))
}

/// Events matching `filter` with `after < seq <= up_to`, in order, at most `limit`.
pub fn replay(
    conn: &Connection,
    filter: &EventFilter,
    after: u64,
    up_to: u64,
    limit: usize,
) -> rusqlite::Result<Vec<Arc<Event>>> {
    // SQLite integers are signed.
    let (after, up_to) = (after.min(i64::MAX as u64), up_to.min(i64::MAX as u64));
    let mut events = stored_events(conn, filter, after, up_to, limit)?;
    if filter.topic_matches("execution.output") {
        events.extend(output_events(conn, filter, after, up_to, limit)?);
        events.sort_by_key(|e| e.seq);
        events.truncate(limit);
    }
    Ok(events)
}

/// The seq range's two parameters, plus the filter's execution and session narrowing
/// (appended to `sql`, which must end in a `WHERE` clause).
fn narrow(
    sql: &mut String,
    filter: &EventFilter,
    after: u64,
    up_to: u64,
    (execution_column, session_column): (&str, &str),
) -> Vec<Box<dyn ToSql>> {
    let mut values: Vec<Box<dyn ToSql>> = vec![Box::new(after as i64), Box::new(up_to as i64)];
    if let Some(id) = filter.execution_id {
        sql.push_str(&format!(" AND {execution_column} = ?"));
        values.push(Box::new(id.0));
    }
    if let Some(id) = filter.session_id {
        sql.push_str(&format!(" AND {session_column} = ?"));
        values.push(Box::new(id));
    }
    values
}

fn stored_events(
    conn: &Connection,
    filter: &EventFilter,
    after: u64,
    up_to: u64,
    limit: usize,
) -> rusqlite::Result<Vec<Arc<Event>>> {
    let mut sql = String::from("SELECT json FROM events WHERE seq > ? AND seq <= ?");
    let mut values = narrow(&mut sql, filter, after, up_to, ("execution_id", "session_id"));
    if !filter.topics.iter().any(|t| t == "*") {
        let mut alternatives = Vec::new();
        for topic in &filter.topics {
            match topic.strip_suffix('*') {
                Some(prefix) => {
                    alternatives.push("substr(type, 1, ?) = ?");
                    values.push(Box::new(prefix.len() as i64));
                    values.push(Box::new(prefix.to_owned()));
                }
                None => {
                    alternatives.push("type = ?");
                    values.push(Box::new(topic.clone()));
                }
            }
        }
        if alternatives.is_empty() {
            return Ok(Vec::new());
        }
        sql.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
    }
    sql.push_str(&format!(" ORDER BY seq LIMIT {limit}"));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values.iter()), |row| row.get::<_, String>(0))?;
    let mut events = Vec::new();
    for json in rows {
        let json = json?;
        let envelope: Envelope = serde_json::from_str(&json)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))?;
        events.push(Arc::new(Event::with_json(&envelope, json)));
    }
    Ok(events)
}

fn output_events(
    conn: &Connection,
    filter: &EventFilter,
    after: u64,
    up_to: u64,
    limit: usize,
) -> rusqlite::Result<Vec<Arc<Event>>> {
    let mut sql = String::from(
        "SELECT o.seq, o.ts, o.n, o.stream, o.text, o.execution_id, e.session_id, e.workspace
         FROM execution_output o JOIN executions e ON e.id = o.execution_id
         WHERE o.seq > ? AND o.seq <= ?",
    );
    let values = narrow(&mut sql, filter, after, up_to, ("o.execution_id", "e.session_id"));
    sql.push_str(&format!(" ORDER BY o.seq LIMIT {limit}"));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values.iter()), |row| {
        let stream: String = row.get(3)?;
        let source =
            OutputSource { execution_id: ExecutionId(row.get(5)?), session_id: row.get(6)?, workspace: row.get(7)? };
        let stream = if stream == "stderr" { OutputStream::Stderr } else { OutputStream::Stdout };
        let text: String = row.get(4)?;
        let json_after_seq =
            output_json_after_seq(ts_column(row, 1)?, row.get::<_, i64>(2)? as u64, stream, &text, &source);
        let seq = row.get::<_, i64>(0)? as u64;
        Ok(Arc::new(Event::output(seq, source.execution_id, source.session_id, json_after_seq)))
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-made JSON of an output event is what serialising its envelope gives.
    #[test]
    fn output_json_is_the_envelope_serialised() {
        for (session_id, workspace) in [(None, None), (Some(4), Some("my \"app\"".to_owned()))] {
            let source = OutputSource { execution_id: ExecutionId(7), session_id, workspace };
            let line =
                OutputLine { n: 12, stream: OutputStream::Stderr, text: "tab\t, quote \" é \u{1}".into(), ts: now() };
            let envelope = Envelope {
                seq: 99,
                ts: line.ts,
                kind: "execution.output".into(),
                priority: Priority::Low,
                execution_id: Some(source.execution_id),
                approval_id: None,
                session_id: source.session_id,
                workspace: source.workspace.clone(),
                data: serde_json::json!({ "n": line.n, "stream": line.stream, "text": line.text }),
            };
            let mut prepared = PreparedOutput::new(line, &source);
            let mut event = prepared.event.take().unwrap();
            Arc::get_mut(&mut event).unwrap().seq = 99;
            assert_eq!(event.json(), serde_json::to_string(&envelope).unwrap());
        }
    }
}
