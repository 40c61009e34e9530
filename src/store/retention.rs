//! Retention's queries: which final executions lose their output and events, what they
//! hold, removing it a little at a time (each call a short job on the writer), the
//! pruned ranges that replays and history pages report, and the database's size. The
//! Retention actor drives them; the writer runs the deleting ones, the pool the rest.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::catalog::ts_column;
use crate::domain::{format_ts, EventFilter, ExecutionId, ExecutionStatus, PruneReason, PrunedRange, SessionId, Word};

/// A final execution retention may prune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub id: ExecutionId,
    pub session_id: Option<SessionId>,
}

/// What one execution's output and events hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    pub output_lines: u64,
    pub events: u64,
    /// The bytes of their text (output lines and event JSON).
    pub bytes: u64,
    /// The lowest and highest seq among them (none when there are none).
    pub seqs: Option<(u64, u64)>,
}

fn finals() -> String {
    let finals: Vec<ExecutionStatus> =
        <ExecutionStatus as strum::VariantArray>::VARIANTS.iter().copied().filter(|s| s.is_final()).collect();
    ExecutionStatus::sql(&finals)
}

/// The lowest id among the newest `keep_last` executions (final or not): those are kept
/// whatever their age. `None` when there are fewer, or `keep_last` is 0.
fn kept_from(conn: &Connection, keep_last: u64) -> rusqlite::Result<Option<i64>> {
    if keep_last == 0 {
        return Ok(None);
    }
    conn.prepare_cached("SELECT id FROM executions ORDER BY id DESC LIMIT 1 OFFSET ?1")?
        .query_row([keep_last as i64 - 1], |row| row.get(0))
        .optional()
}

/// Final executions not pruned yet and not among the newest `keep_last`, oldest first
/// (by id), after `after`, at most `limit`; with `finished_before`, only those that
/// ended before it.
pub fn candidates(
    conn: &Connection,
    finished_before: Option<DateTime<Utc>>,
    keep_last: u64,
    after: ExecutionId,
    limit: usize,
) -> rusqlite::Result<Vec<Candidate>> {
    let kept_from = kept_from(conn, keep_last)?.unwrap_or(i64::MAX);
    let (age_clause, cutoff) = match finished_before {
        Some(cutoff) => ("AND finished_at < ?4", format_ts(&cutoff)),
        None => ("AND ?4 = ?4", String::new()),
    };
    let sql = format!(
        "SELECT id, session_id FROM executions
         WHERE pruned_at IS NULL AND status IN ({}) AND finished_at IS NOT NULL {age_clause}
           AND id > ?1 AND id < ?2
         ORDER BY id LIMIT ?3",
        finals()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![after.0, kept_from, limit as i64, cutoff], |row| {
        Ok(Candidate { id: ExecutionId(row.get(0)?), session_id: row.get(1)? })
    })?;
    rows.collect()
}

/// What an execution's output and events hold now.
pub fn footprint(conn: &Connection, id: ExecutionId) -> rusqlite::Result<Footprint> {
    let (lines, line_bytes, first_line, last_line): (i64, i64, Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "SELECT coalesce(sum(lines), 0), coalesce(sum(length(CAST(text AS BLOB))), 0),
                    min(first_seq), max(first_seq + lines - 1)
             FROM output_chunks WHERE execution_id = ?1",
        )?
        .query_row([id.0], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?;
    let (events, event_bytes, first_event, last_event): (i64, i64, Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "SELECT count(*), coalesce(sum(length(CAST(json AS BLOB))), 0), min(seq), max(seq)
             FROM events WHERE execution_id = ?1",
        )?
        .query_row([id.0], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?;
    let lowest = [first_line, first_event].into_iter().flatten().min();
    let highest = [last_line, last_event].into_iter().flatten().max();
    Ok(Footprint {
        output_lines: lines as u64,
        events: events as u64,
        bytes: (line_bytes + event_bytes) as u64,
        seqs: lowest.zip(highest).map(|(a, b)| (a as u64, b as u64)),
    })
}

/// One execution's pruned range as recorded before its rows go.
#[derive(Debug, Clone, Copy)]
pub struct Pruning {
    pub candidate: Candidate,
    pub pass: i64,
    pub reason: PruneReason,
    pub at: DateTime<Utc>,
    pub footprint: Footprint,
}

/// Records that an execution's output and events are going (its pruned range, and on
/// its row `pruned_at`); its rows are removed after, by [`remove_some`]. Returns false
/// (and changes nothing) when it is not a final execution any more to be pruned.
pub fn mark_pruned(conn: &Connection, pruning: &Pruning) -> rusqlite::Result<bool> {
    let at = format_ts(&pruning.at);
    let marked = conn
        .prepare_cached(&format!(
            "UPDATE executions SET pruned_at = ?2,
                 json = CASE WHEN json IS NULL THEN NULL ELSE json_set(json, '$.pruned_at', ?2) END
             WHERE id = ?1 AND pruned_at IS NULL AND status IN ({})",
            finals()
        ))?
        .execute(params![pruning.candidate.id.0, at])?;
    if marked == 0 {
        return Ok(false);
    }
    record_range(conn, pruning)?;
    Ok(true)
}

fn record_range(conn: &Connection, pruning: &Pruning) -> rusqlite::Result<()> {
    let (from, to) = pruning.footprint.seqs.unwrap_or((0, 0));
    if from > 0 {
        conn.prepare_cached(
            "INSERT INTO pruned_passes (pass, reason, at, from_seq, to_seq, executions, execution_id)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)
             ON CONFLICT (pass) DO UPDATE SET from_seq = min(from_seq, excluded.from_seq),
                 to_seq = max(to_seq, excluded.to_seq), executions = executions + 1, execution_id = NULL",
        )?
        .execute(params![
            pruning.pass,
            pruning.reason.as_str(),
            format_ts(&pruning.at),
            from as i64,
            to as i64,
            pruning.candidate.id.0
        ])?;
    }
    conn.prepare_cached(
        "INSERT INTO pruned_ranges (execution_id, session_id, pass, reason, at, from_seq, to_seq, output_lines, events)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (execution_id) DO UPDATE SET reason = excluded.reason, pass = excluded.pass, at = excluded.at",
    )?
    .execute(params![
        pruning.candidate.id.0,
        pruning.candidate.session_id,
        pruning.pass,
        pruning.reason.as_str(),
        format_ts(&pruning.at),
        from as i64,
        to as i64,
        pruning.footprint.output_lines as i64,
        pruning.footprint.events as i64,
    ])?;
    Ok(())
}

/// Why an execution cannot be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotDeleted {
    Missing,
    NotFinal(ExecutionStatus),
}

/// Deletes a final execution's row (and its agent summary and approvals), recording its
/// range as `deleted`; its output and events are removed after, by [`remove_some`].
pub fn delete_row(conn: &Connection, pruning: &Pruning) -> rusqlite::Result<Result<(), NotDeleted>> {
    let id = pruning.candidate.id;
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM executions WHERE id = ?1")?
        .query_row([id.0], |row| row.get(0))
        .optional()?;
    let Some(status) = status else { return Ok(Err(NotDeleted::Missing)) };
    match ExecutionStatus::parse(&status) {
        Some(status) if status.is_final() => {}
        Some(status) => return Ok(Err(NotDeleted::NotFinal(status))),
        None => return Ok(Err(NotDeleted::Missing)),
    }
    record_range(conn, pruning)?;
    conn.prepare_cached("DELETE FROM agent_activity WHERE execution_id = ?1")?.execute([id.0])?;
    conn.prepare_cached("DELETE FROM approvals WHERE execution_id = ?1")?.execute([id.0])?;
    conn.prepare_cached("UPDATE session_messages SET execution_id = NULL WHERE execution_id = ?1")?.execute([id.0])?;
    conn.prepare_cached("DELETE FROM executions WHERE id = ?1")?.execute([id.0])?;
    Ok(Ok(()))
}

/// Removes some of the executions' output chunks and events, a few rows at a time, for
/// at most about `budget`; returns those that still have some (an execution whose rows
/// are all gone has its range marked `done`).
pub fn remove_some(conn: &Connection, ids: &[ExecutionId], budget: Duration) -> rusqlite::Result<Vec<ExecutionId>> {
    let started = Instant::now();
    let mut chunks = conn.prepare_cached(
        "DELETE FROM output_chunks WHERE execution_id = ?1 AND first_n IN
             (SELECT first_n FROM output_chunks WHERE execution_id = ?1 ORDER BY first_n LIMIT 8)",
    )?;
    let mut events = conn.prepare_cached(
        "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE execution_id = ?1 ORDER BY seq LIMIT 32)",
    )?;
    let mut done = conn.prepare_cached("UPDATE pruned_ranges SET done = 1 WHERE execution_id = ?1")?;
    for (i, id) in ids.iter().enumerate() {
        loop {
            if started.elapsed() >= budget {
                return Ok(ids[i..].to_vec());
            }
            if chunks.execute([id.0])? + events.execute([id.0])? == 0 {
                done.execute([id.0])?;
                break;
            }
        }
    }
    Ok(Vec::new())
}

/// Executions whose pruning was recorded but not finished (the daemon stopped midway).
pub fn unfinished(conn: &Connection) -> rusqlite::Result<Vec<ExecutionId>> {
    let mut stmt =
        conn.prepare_cached("SELECT execution_id FROM pruned_ranges WHERE done = 0 ORDER BY execution_id")?;
    let rows = stmt.query_map([], |row| Ok(ExecutionId(row.get(0)?)))?;
    rows.collect()
}

/// The last pass number used (0 before any).
pub fn last_pass(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT coalesce(max(pass), 0) FROM pruned_ranges", [], |row| row.get(0))
}

/// The ranges pruned between `after` (excluded) and `up_to` that a reader of `filter`
/// would have been sent events from, in seq order: each of the execution's (or the
/// session's executions') own when the filter names one, else one per pass.
pub fn ranges(conn: &Connection, filter: &EventFilter, after: u64, up_to: u64) -> rusqlite::Result<Vec<PrunedRange>> {
    let (after, up_to) = (after.min(i64::MAX as u64) as i64, up_to.min(i64::MAX as u64) as i64);
    let row_of = |row: &rusqlite::Row<'_>| -> rusqlite::Result<PrunedRange> {
        Ok(PrunedRange {
            from_seq: row.get::<_, i64>(0)? as u64,
            to_seq: row.get::<_, i64>(1)? as u64,
            executions: row.get::<_, i64>(2)? as u64,
            execution_id: row.get::<_, Option<i64>>(3)?.map(ExecutionId),
            reason: PruneReason::parse(row.get_ref(4)?.as_str()?).unwrap_or(PruneReason::Retention),
            at: ts_column(row, 5)?,
        })
    };
    let single = "SELECT from_seq, to_seq, 1, execution_id, reason, at FROM pruned_ranges
                  WHERE to_seq > ?1 AND from_seq <= ?2 AND from_seq > 0";
    let ranges: Vec<PrunedRange> = match (filter.execution_id, filter.session_id) {
        (Some(id), session) => {
            let mut stmt = conn.prepare_cached(&format!(
                "{single} AND execution_id = ?3 AND (?4 IS NULL OR session_id = ?4) ORDER BY from_seq"
            ))?;
            let rows = stmt.query_map(params![after, up_to, id.0, session], row_of)?;
            rows.collect::<rusqlite::Result<_>>()?
        }
        (None, Some(session)) => {
            let mut stmt = conn.prepare_cached(&format!("{single} AND session_id = ?3 ORDER BY from_seq"))?;
            let rows = stmt.query_map(params![after, up_to, session], row_of)?;
            rows.collect::<rusqlite::Result<_>>()?
        }
        (None, None) => {
            let mut stmt = conn.prepare_cached(
                "SELECT from_seq, to_seq, executions, execution_id, reason, at FROM pruned_passes
                 WHERE to_seq > ?1 AND from_seq <= ?2 ORDER BY from_seq",
            )?;
            let rows = stmt.query_map(params![after, up_to], row_of)?;
            rows.collect::<rusqlite::Result<_>>()?
        }
    };
    Ok(ranges)
}

/// The database's size: the bytes of its pages in use, and of the whole file (free
/// pages too, until an incremental vacuum gives them back).
pub fn size(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
    let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get::<_, i64>(0));
    let (pages, free, page_size) = (pragma("page_count")?, pragma("freelist_count")?, pragma("page_size")?);
    Ok((((pages - free) * page_size) as u64, (pages * page_size) as u64))
}

/// Gives up to `pages` free pages back to the file system; returns how many free pages
/// are left.
pub fn vacuum_some(conn: &Connection, pages: u32) -> rusqlite::Result<u64> {
    conn.execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))?;
    conn.query_row("PRAGMA freelist_count", [], |row| row.get::<_, i64>(0)).map(|n| n as u64)
}

/// The snapshot trees kept executions need: those of every execution not pruned (and
/// not in `also_pruned`, for a dry run).
pub fn kept_trees(
    conn: &Connection,
    also_pruned: &std::collections::HashSet<ExecutionId>,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT id, json_extract(changes, '$.start_tree'), json_extract(changes, '$.end_tree') FROM executions
         WHERE pruned_at IS NULL AND changes IS NOT NULL",
    )?;
    let mut rows = stmt.query([])?;
    let mut trees = Vec::new();
    while let Some(row) = rows.next()? {
        if also_pruned.contains(&ExecutionId(row.get(0)?)) {
            continue;
        }
        trees.extend([row.get::<_, Option<String>>(1)?, row.get::<_, Option<String>>(2)?].into_iter().flatten());
    }
    Ok(trees)
}
