//! The event log: `EventLog` lives in the writer thread, gives each recorded event the
//! next `seq` inside the commit and collects the events for delivery once committed.
//! `replay` reads events back in `seq` order for clients that reconnect.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{params, params_from_iter, Connection, ToSql};

use super::catalog::ts_column;
use crate::domain::SessionId;
use crate::domain::Word;
use crate::domain::{format_ts, now, Envelope, Event, EventFilter, ExecutionId, NewEvent, OutputStream, Priority};

/// What an execution's output events say about where they come from.
#[derive(Debug, Clone)]
pub struct OutputSource {
    pub execution_id: ExecutionId,
    pub session_id: Option<SessionId>,
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

    /// Stores a chunk of output lines as one row; each line is an `execution.output`
    /// event with its own `seq`. The chunk comes prepared (see [`PreparedChunk`]): the
    /// writer only binds it and gives its events their seqs.
    pub fn record_output(&mut self, conn: &Connection, chunk: &mut PreparedChunk) -> rusqlite::Result<()> {
        let first_seq = self.next_seq;
        conn.prepare_cached(
            "INSERT INTO output_chunks (execution_id, first_n, lines, first_seq, stream, ts, text)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            chunk.execution_id.0,
            chunk.first_n as i64,
            chunk.events.len() as i64,
            first_seq as i64,
            chunk.stream.as_str(),
            chunk.stored_ts,
            chunk.text
        ])?;
        let lines = chunk.events.len() as u64;
        for (seq, mut event) in (first_seq..).zip(chunk.events.drain(..)) {
            if let Some(unshared) = Arc::get_mut(&mut event) {
                unshared.seq = seq;
            }
            self.recorded.push(event);
        }
        self.next_seq = first_seq + lines;
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

/// The most lines one stored chunk holds. Readers look this far back for the chunk
/// that holds a given line or seq.
pub const MAX_CHUNK_LINES: usize = 256;

/// A chunk of output lines (of one stream, read at one moment) made ready for the
/// store's writer where they were read: its row's text and timestamp as stored, and one
/// event per line (JSON after the seq, and the allocation itself), so that the one writer
/// thread neither serialises nor allocates per line.
pub struct PreparedChunk {
    execution_id: ExecutionId,
    first_n: u64,
    stream: OutputStream,
    stored_ts: String,
    /// The lines joined by `\n`.
    text: String,
    /// One per line, taken by the writer, which gives them their seqs.
    events: Vec<Arc<Event>>,
}

impl PreparedChunk {
    /// `text` is 1 to [`MAX_CHUNK_LINES`] lines joined by `\n` (a line never holds one),
    /// numbered from `first_n`; the schema refuses a longer chunk.
    pub fn new(source: &OutputSource, first_n: u64, stream: OutputStream, ts: DateTime<Utc>, text: String) -> Self {
        let json = OutputJson::new(ts, stream, source);
        let events = chunk_lines(first_n, &text)
            .map(|(n, line)| Arc::new(Event::output(0, source.execution_id, source.session_id, json.line(n, line))))
            .collect();
        PreparedChunk { execution_id: source.execution_id, first_n, stream, stored_ts: format_ts(&ts), text, events }
    }

    pub fn lines(&self) -> usize {
        self.events.len()
    }
}

/// A chunk's lines with their numbers: `(n, text)`. Line `n` has seq
/// `first_seq + (n - first_n)`.
pub(super) fn chunk_lines(first_n: u64, text: &str) -> impl Iterator<Item = (u64, &str)> {
    (first_n..).zip(text.split('\n'))
}

/// The JSON of a chunk's output events (as [`Envelope`] serialises them) from the field
/// after `seq` on: `,"ts":…,"type":"execution.output",…,"data":{"n":…,"stream":…,"text":…}}`.
/// All but `n` and `text` is the chunk's, written once for all its lines.
struct OutputJson {
    /// Up to and with `"n":`.
    head: Vec<u8>,
    /// From after `n` up to and with `"text":`.
    middle: String,
}

impl OutputJson {
    fn new(ts: DateTime<Utc>, stream: OutputStream, source: &OutputSource) -> Self {
        use std::io::Write;
        let mut head: Vec<u8> = Vec::with_capacity(160);
        head.extend_from_slice(b",\"ts\":");
        let _ = serde_json::to_writer(&mut head, &ts);
        let _ = write!(
            head,
            ",\"type\":\"execution.output\",\"priority\":\"low\",\"execution_id\":{}",
            source.execution_id.0
        );
        if let Some(session) = source.session_id {
            let _ = write!(head, ",\"session_id\":{session}");
        }
        if let Some(workspace) = &source.workspace {
            head.extend_from_slice(b",\"workspace\":");
            let _ = serde_json::to_writer(&mut head, workspace);
        }
        head.extend_from_slice(b",\"data\":{\"n\":");
        OutputJson { head, middle: format!(",\"stream\":\"{}\",\"text\":", stream.as_str()) }
    }

    fn line(&self, n: u64, text: &str) -> String {
        use std::io::Write;
        let mut out: Vec<u8> = Vec::with_capacity(self.head.len() + self.middle.len() + text.len() + 24);
        out.extend_from_slice(&self.head);
        let _ = write!(out, "{n}");
        out.extend_from_slice(self.middle.as_bytes());
        let _ = serde_json::to_writer(&mut out, text);
        out.extend_from_slice(b"}}");
        // Only JSON text was written.
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The highest `seq` recorded so far (0 for a new database).
pub fn last_seq(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT max(coalesce((SELECT max(seq) FROM events), 0),
                    coalesce((SELECT first_seq + lines - 1 FROM output_chunks ORDER BY first_seq DESC LIMIT 1), 0))",
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
        "SELECT o.first_seq, o.ts, o.first_n, o.stream, o.text, o.execution_id, e.session_id, e.workspace
         FROM output_chunks o JOIN executions e ON e.id = o.execution_id
         WHERE o.first_seq > ? AND o.first_seq <= ?",
    );
    // The chunk that holds `after + 1` may start up to a chunk's length before it.
    let chunks_after = after.saturating_sub(MAX_CHUNK_LINES as u64);
    let values = narrow(&mut sql, filter, chunks_after, up_to, ("o.execution_id", "e.session_id"));
    sql.push_str(" ORDER BY o.first_seq");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(values.iter()))?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        // Chunks come in seq order and do not overlap: later ones only come after.
        if events.len() >= limit {
            break;
        }
        let first_seq = row.get::<_, i64>(0)? as u64;
        let ts = ts_column(row, 1)?;
        let stream = OutputStream::from_stored(row.get_ref(3)?.as_str()?);
        let source =
            OutputSource { execution_id: ExecutionId(row.get(5)?), session_id: row.get(6)?, workspace: row.get(7)? };
        let text = row.get_ref(4)?.as_str()?;
        let first_n = row.get::<_, i64>(2)? as u64;
        let json = OutputJson::new(ts, stream, &source);
        for (n, line) in chunk_lines(first_n, text) {
            let seq = first_seq + (n - first_n);
            if seq > after && seq <= up_to {
                events.push(Arc::new(Event::output(seq, source.execution_id, source.session_id, json.line(n, line))));
            }
        }
    }
    events.truncate(limit);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-made JSON of an output event is what serialising its envelope gives.
    #[test]
    fn output_json_is_the_envelope_serialised() {
        for (session_id, workspace) in [(None, None), (Some(SessionId(4)), Some("my \"app\"".to_owned()))] {
            let source = OutputSource { execution_id: ExecutionId(7), session_id, workspace };
            let (ts, text) = (now(), "tab\t, quote \" é \u{1}");
            let envelope = Envelope {
                seq: 99,
                ts,
                kind: "execution.output".into(),
                priority: Priority::Low,
                execution_id: Some(source.execution_id),
                approval_id: None,
                session_id: source.session_id,
                workspace: source.workspace.clone(),
                data: serde_json::json!({ "n": 13, "stream": "stderr", "text": text }),
            };
            // The chunk's second line is line 13.
            let mut chunk = PreparedChunk::new(&source, 12, OutputStream::Stderr, ts, format!("first\n{text}"));
            assert_eq!(chunk.lines(), 2);
            let mut event = chunk.events.remove(1);
            Arc::get_mut(&mut event).unwrap().seq = 99;
            assert_eq!(event.json(), serde_json::to_string(&envelope).unwrap());
        }
    }

    /// Replays and pages start and stop inside chunks: a range that begins or ends in the
    /// middle of one gets exactly its lines, across executions and narrowed to one.
    #[actix::test]
    async fn replays_cut_chunks_at_the_asked_seqs() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = crate::store::Store::open(&dir.path().join("w.db")).expect("a new database opens");
        store
            .write("executions", |c| {
                c.execute_batch(
                    "INSERT INTO executions (id, status, profile, provider, cwd, prompt, argv, env, created_at, queue_order)
                     VALUES (1, 'running', 'p', 'p', '/', '', '[]', '{}', '2026-01-01T00:00:00.000Z', 1),
                            (2, 'running', 'p', 'p', '/', '', '[]', '{}', '2026-01-01T00:00:00.000Z', 2)",
                )
            })
            .await
            .expect("two executions are stored");
        // Execution 1: lines 1-3, then execution 2: lines 1-2, then execution 1: lines 4-5.
        let chunk = |id, first_n, text: &str| {
            let source = OutputSource { execution_id: ExecutionId(id), session_id: None, workspace: None };
            PreparedChunk::new(&source, first_n, OutputStream::Stdout, now(), text.to_owned())
        };
        let mut chunks = vec![chunk(1, 1, "a\nb\nc"), chunk(2, 1, "x\ny"), chunk(1, 4, "d\n")];
        let first = store
            .record("output", move |c, log| {
                let first = log.next_seq;
                for chunk in &mut chunks {
                    log.record_output(c, chunk)?;
                }
                Ok(first)
            })
            .await
            .expect("the chunks are stored");
        let texts = |filter: EventFilter, after: u64, limit: usize| {
            let store = store.clone();
            async move {
                let events = store
                    .read("replay", move |c| replay(c, &filter, after, u64::MAX, limit))
                    .await
                    .expect("the replay reads");
                events
                    .iter()
                    .map(|e| {
                        let envelope: Envelope = serde_json::from_str(e.json()).expect("an event is an envelope");
                        assert_eq!(envelope.seq, e.seq);
                        format!(
                            "{}:{}",
                            e.seq - first,
                            envelope.data["text"].as_str().expect("an output event has text")
                        )
                    })
                    .collect::<Vec<_>>()
            }
        };
        let all = EventFilter { topics: vec!["execution.output".into()], ..Default::default() };
        let one = EventFilter { execution_id: Some(ExecutionId(1)), ..all.clone() };
        assert_eq!(texts(all.clone(), 0, 100).await, ["0:a", "1:b", "2:c", "3:x", "4:y", "5:d", "6:"]);
        assert_eq!(texts(all.clone(), first + 1, 3).await, ["2:c", "3:x", "4:y"]);
        assert_eq!(texts(one.clone(), first, 100).await, ["1:b", "2:c", "5:d", "6:"]);
        assert_eq!(texts(one, first + 5, 100).await, ["6:"]);
        let last = store.read("last", last_seq).await.expect("the last seq reads");
        assert_eq!(last, first + 6);
    }
}
