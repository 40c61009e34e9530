//! Rows of executions and their output lines. The ExecutionMonitor writes them through
//! the store; the HTTP read side pages through them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, ToSql};

use super::catalog::ts_column;
use super::events::{chunk_lines, MAX_CHUNK_LINES};
use crate::domain::Word;
use crate::domain::{
    format_ts, ChangesSummary, Execution, ExecutionFilter, ExecutionId, ExecutionStatus, Isolation, NewExecution,
    OutputLine, OutputStream, SandboxApplied, SessionId,
};

const COLUMNS: &str = "id, status, profile, provider, workspace, cwd, prompt, argv, timeout_s, exit_code, error, \
     created_at, started_at, finished_at, retry_of, session_id, approval_id, changes, sandbox, \
     isolation, branch, worktree, base, base_ref, base_branch, pruned_at";

/// How many `COLUMNS` there are: a query may select more after them.
const COLUMN_COUNT: usize = 26;

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn optional_ts(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get_ref(column)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        _ => ts_column(row, column).map(Some),
    }
}

fn parse_status(row: &Row<'_>, column: usize) -> rusqlite::Result<ExecutionStatus> {
    let status: String = row.get(column)?;
    ExecutionStatus::parse(&status).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            format!("status {status}").into(),
        )
    })
}

fn execution_row(row: &Row<'_>) -> rusqlite::Result<Execution> {
    let argv: String = row.get(7)?;
    Ok(Execution {
        id: ExecutionId(row.get(0)?),
        status: parse_status(row, 1)?,
        profile: row.get(2)?,
        provider: row.get(3)?,
        workspace: row.get(4)?,
        cwd: row.get(5)?,
        prompt: row.get(6)?,
        argv: serde_json::from_str(&argv)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, Box::new(e)))?,
        timeout_s: row.get::<_, Option<i64>>(8)?.map(|t| t as u64),
        exit_code: row.get(9)?,
        error: row.get(10)?,
        created_at: ts_column(row, 11)?,
        started_at: optional_ts(row, 12)?,
        finished_at: optional_ts(row, 13)?,
        queue_position: None,
        retry_of: row.get::<_, Option<i64>>(14)?.map(ExecutionId),
        session_id: row.get(15)?,
        approval_id: row.get(16)?,
        waiting_approval_id: None,
        changes: match row.get::<_, Option<String>>(17)? {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(17, rusqlite::types::Type::Text, Box::new(e))
            })?),
            None => None,
        },
        sandbox: SandboxApplied::from_stored(row.get_ref(18)?.as_str_or_null()?),
        isolation: Isolation::parse(row.get_ref(19)?.as_str()?).unwrap_or_default(),
        branch: row.get(20)?,
        worktree: row.get(21)?,
        base: row.get(22)?,
        base_ref: row.get(23)?,
        base_branch: row.get(24)?,
        waiting_for: None,
        agent: None,
        pruned_at: optional_ts(row, 25)?,
    })
}

/// The statuses of executions whose process may be alive.
pub const WITH_PROCESS: [ExecutionStatus; 2] = [ExecutionStatus::Running, ExecutionStatus::Paused];
/// The statuses that are not final.
const NOT_FINAL: [ExecutionStatus; 4] =
    [ExecutionStatus::PendingApproval, ExecutionStatus::Queued, ExecutionStatus::Running, ExecutionStatus::Paused];

/// Stores a new execution with its request's own env (kept for retries) and the hash of
/// its agent token.
pub fn insert(
    conn: &Connection,
    execution: &Execution,
    env: &BTreeMap<String, String>,
    queue_order: i64,
    agent_token_hash: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO executions (id, status, profile, provider, workspace, cwd, prompt, argv, env, timeout_s,
             created_at, retry_of, session_id, approval_id, queue_order, sandbox, agent_token_hash, isolation,
             base_ref)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
    )?
    .execute(params![
        execution.id.0,
        execution.status.as_str(),
        execution.profile,
        execution.provider,
        execution.workspace,
        execution.cwd,
        execution.prompt,
        serde_json::to_string(&execution.argv).map_err(json_err)?,
        serde_json::to_string(env).map_err(json_err)?,
        execution.timeout_s.map(|t| t as i64),
        format_ts(&execution.created_at),
        execution.retry_of.map(|r| r.0),
        execution.session_id,
        execution.approval_id,
        queue_order,
        execution.sandbox.as_str(),
        agent_token_hash,
        execution.isolation.as_str(),
        execution.base_ref,
    ])?;
    if let Some(agent) = &execution.agent {
        super::agent_activity::store_summary(conn, execution.id, agent)?;
    }
    Ok(())
}

/// Records that the process started, with what recognises it after a crash and the
/// start snapshot of its work tree.
pub fn mark_started(
    conn: &Connection,
    execution: &Execution,
    pid: i32,
    start_ticks: Option<u64>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE executions SET status = ?7, started_at = ?2, pid = ?3, proc_start_ticks = ?4, changes = ?5,
             sandbox = ?6, branch = ?8, worktree = ?9, base = ?10, base_branch = ?11
         WHERE id = ?1",
    )?
    .execute(params![
        execution.id.0,
        execution.started_at.as_ref().map(format_ts),
        pid,
        start_ticks.map(|t| t as i64),
        changes_json(&execution.changes)?,
        execution.sandbox.as_str(),
        execution.status.as_str(),
        execution.branch,
        execution.worktree,
        execution.base,
        execution.base_branch,
    ])?;
    Ok(())
}

/// Records the hash of an execution's new agent token (a queued execution gets a new one
/// at each start of the daemon: the old token is gone with the old daemon).
pub fn set_agent_token_hash(conn: &Connection, id: ExecutionId, hash: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE executions SET agent_token_hash = ?2 WHERE id = ?1")?.execute(params![id.0, hash])?;
    Ok(())
}

/// Records new snapshots of an execution's work tree (the end one, or a failure).
pub fn set_changes(conn: &Connection, id: ExecutionId, changes: &Option<ChangesSummary>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE executions SET changes = ?2,
             json = CASE WHEN json IS NULL THEN NULL ELSE json_set(json, '$.changes', json(?2)) END
         WHERE id = ?1",
    )?
    .execute(params![id.0, changes_json(changes)?])?;
    Ok(())
}

fn changes_json(changes: &Option<ChangesSummary>) -> rusqlite::Result<Option<String>> {
    changes.as_ref().map(|c| serde_json::to_string(c).map_err(json_err)).transpose()
}

/// Executions that ended (or were interrupted by a crash) before their end snapshot was
/// recorded: it is taken at the next start.
pub fn awaiting_end_snapshot(conn: &Connection) -> rusqlite::Result<Vec<Execution>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM executions
         WHERE changes IS NOT NULL AND status NOT IN ({})
           AND json_extract(changes, '$.start_tree') IS NOT NULL AND json_extract(changes, '$.end_tree') IS NULL
           AND json_extract(changes, '$.error') IS NULL",
        ExecutionStatus::sql(&NOT_FINAL)
    ))?;
    let rows = stmt.query_map([], execution_row)?;
    rows.collect()
}

/// Records the approval that gates an execution.
pub fn set_approval(
    conn: &Connection,
    id: ExecutionId,
    approval_id: crate::domain::ApprovalId,
) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE executions SET approval_id = ?2 WHERE id = ?1")?.execute(params![id.0, approval_id])?;
    Ok(())
}

/// Records a non-final change of status (paused, running again).
pub fn set_status(conn: &Connection, id: ExecutionId, status: ExecutionStatus) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE executions SET status = ?2 WHERE id = ?1")?.execute(params![id.0, status.as_str()])?;
    Ok(())
}

/// Records the final state, and the execution's JSON as lists show it from now on.
pub fn mark_finished(conn: &Connection, execution: &Execution) -> rusqlite::Result<()> {
    // As decoding the row would give it: what only a live execution has is gone.
    let shown = Execution { queue_position: None, waiting_approval_id: None, waiting_for: None, ..execution.clone() };
    conn.prepare_cached(
        "UPDATE executions SET status = ?2, exit_code = ?3, error = ?4, finished_at = ?5, pid = NULL, json = ?6
         WHERE id = ?1",
    )?
    .execute(params![
        execution.id.0,
        execution.status.as_str(),
        execution.exit_code,
        execution.error,
        execution.finished_at.as_ref().map(format_ts),
        serde_json::to_string(&shown).map_err(json_err)?,
    ])?;
    Ok(())
}

/// An isolated branch is gone (merged or discarded), and its worktree with it: every
/// execution that worked on it (a session's turns share one) says so, in its row and in
/// its stored JSON.
pub fn forget_branch(conn: &Connection, branch: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE executions SET branch = NULL, worktree = NULL,
             json = CASE WHEN json IS NULL THEN NULL ELSE json_set(json, '$.branch', NULL, '$.worktree', NULL) END
         WHERE branch = ?1",
    )?
    .execute([branch])
}

/// A worktree directory is gone (removed after `keep_days`, or deleted by the user); its
/// branch stays. Every execution that worked in it says so.
pub fn forget_worktree(conn: &Connection, worktree: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE executions SET worktree = NULL,
             json = CASE WHEN json IS NULL THEN NULL ELSE json_set(json, '$.worktree', NULL) END
         WHERE worktree = ?1",
    )?
    .execute([worktree])
}

/// The worktree a session's turns work in.
#[derive(Debug, Clone)]
pub struct SessionWorktree {
    /// Its directory; none once removed (its branch stays).
    pub worktree: Option<String>,
    pub branch: String,
    /// The commit the session's first turn started from.
    pub base: String,
    pub base_branch: Option<String>,
}

/// The worktree a session's earlier turn left (its latest), to work on in the next turn.
pub fn session_worktree(
    conn: &Connection,
    session: SessionId,
    before: ExecutionId,
) -> rusqlite::Result<Option<SessionWorktree>> {
    conn.prepare_cached(
        "SELECT worktree, branch, base, base_branch FROM executions
         WHERE session_id = ?1 AND id < ?2 AND branch IS NOT NULL AND base IS NOT NULL
         ORDER BY id DESC LIMIT 1",
    )?
    .query_row([session.0, before.0], |row| {
        Ok(SessionWorktree { worktree: row.get(0)?, branch: row.get(1)?, base: row.get(2)?, base_branch: row.get(3)? })
    })
    .optional()
}

/// A worktree whose executions have all ended.
#[derive(Debug, Clone)]
pub struct EndedWorktree {
    pub worktree: String,
    /// Where its executions were asked to run (in the user's work tree).
    pub cwd: String,
    pub branch: String,
    /// When the last of them ended.
    pub ended: DateTime<Utc>,
}

/// Final isolated executions whose worktree is still there, with when they ended: for the
/// clean-up of old worktrees. A session's worktree is listed once, with its latest end,
/// and not while one of its turns is still going.
pub fn worktrees_of_final(conn: &Connection) -> rusqlite::Result<Vec<EndedWorktree>> {
    let finals: Vec<ExecutionStatus> =
        <ExecutionStatus as strum::VariantArray>::VARIANTS.iter().copied().filter(|s| s.is_final()).collect();
    let finals = ExecutionStatus::sql(&finals);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT worktree, max(cwd), max(branch), max(finished_at) FROM executions
         WHERE worktree IS NOT NULL
         GROUP BY worktree
         HAVING count(*) = count(CASE WHEN status IN ({finals}) AND finished_at IS NOT NULL THEN 1 END)"
    ))?;
    let rows = stmt.query_map([], |row| {
        Ok(EndedWorktree { worktree: row.get(0)?, cwd: row.get(1)?, branch: row.get(2)?, ended: ts_column(row, 3)? })
    })?;
    rows.collect()
}

/// Worktrees still there whose executions are all pruned (or in `also_pruned`): retention
/// removes them.
pub fn worktrees_of_pruned(
    conn: &Connection,
    also_pruned: &std::collections::HashSet<ExecutionId>,
) -> rusqlite::Result<Vec<EndedWorktree>> {
    let mut stmt = conn.prepare_cached(
        "SELECT worktree, max(cwd), max(branch), max(finished_at), group_concat(CASE WHEN pruned_at IS NULL THEN id END)
         FROM executions WHERE worktree IS NOT NULL AND branch IS NOT NULL GROUP BY worktree",
    )?;
    let mut rows = stmt.query([])?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        let unpruned: Option<String> = row.get(4)?;
        let all_pruned = unpruned
            .unwrap_or_default()
            .split(',')
            .filter(|id| !id.is_empty())
            .all(|id| id.parse().is_ok_and(|id| also_pruned.contains(&ExecutionId(id))));
        if all_pruned {
            let ended = optional_ts(row, 3)?.unwrap_or_else(Utc::now);
            found.push(EndedWorktree { worktree: row.get(0)?, cwd: row.get(1)?, branch: row.get(2)?, ended });
        }
    }
    Ok(found)
}

/// How many executions besides `id` work in `worktree`.
pub fn others_in_worktree(conn: &Connection, worktree: &str, id: ExecutionId) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT count(*) FROM executions WHERE worktree = ?1 AND id != ?2")?
        .query_row(params![worktree, id.0], |row| row.get::<_, i64>(0))
        .map(|n| n as u64)
}

pub fn get(conn: &Connection, id: ExecutionId) -> rusqlite::Result<Option<Execution>> {
    let Some(mut execution) = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM executions WHERE id = ?1"))?
        .query_row([id.0], execution_row)
        .optional()?
    else {
        return Ok(None);
    };
    execution.agent = super::agent_activity::summary(conn, id)?.map(Box::new);
    Ok(Some(execution))
}

/// The request an execution was made from, for a retry.
pub fn request_of(conn: &Connection, id: ExecutionId) -> rusqlite::Result<Option<NewExecution>> {
    conn.prepare_cached(
        "SELECT prompt, profile, workspace, cwd, env, timeout_s, isolation, base_ref FROM executions WHERE id = ?1",
    )?
    .query_row([id.0], |row| {
        let workspace: Option<String> = row.get(2)?;
        let env: String = row.get(4)?;
        Ok(NewExecution {
            prompt: row.get(0)?,
            profile: Some(row.get(1)?),
            cwd: if workspace.is_none() { Some(row.get(3)?) } else { None },
            workspace,
            env: serde_json::from_str(&env)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e)))?,
            timeout_s: row.get::<_, Option<i64>>(5)?.map(|t| t as u64),
            isolation: Isolation::parse(row.get_ref(6)?.as_str()?),
            base: row.get(7)?,
        })
    })
    .optional()
}

/// Newest first, after `before` (an id), filtered, at most `limit`: for `each` row its
/// id, status and, for a final one, the JSON stored when it ended, as the API shows it
/// (others are decoded with [`get`]). Only these three columns are read, so a page of
/// past executions costs little.
pub fn list(
    conn: &Connection,
    filter: &ExecutionFilter,
    statuses: &[ExecutionStatus],
    before: Option<ExecutionId>,
    limit: usize,
    mut each: impl FnMut(ExecutionId, ExecutionStatus, Option<&str>) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut clauses: Vec<String> = Vec::new();
    let mut values: Vec<Box<dyn ToSql>> = Vec::new();
    if !statuses.is_empty() {
        let marks = vec!["?"; statuses.len()].join(", ");
        clauses.push(format!("status IN ({marks})"));
        values.extend(statuses.iter().map(|s| Box::new(s.as_str()) as Box<dyn ToSql>));
    }
    for (column, value) in
        [("workspace", &filter.workspace), ("profile", &filter.profile), ("provider", &filter.provider)]
    {
        if let Some(value) = value {
            clauses.push(format!("{column} = ?"));
            values.push(Box::new(value.clone()));
        }
    }
    if let Some(session) = filter.session_id {
        clauses.push("session_id = ?".into());
        values.push(Box::new(session));
    }
    if let Some(before) = before {
        clauses.push("id < ?".into());
        values.push(Box::new(before.0));
    }
    let where_clause = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
    let sql = format!("SELECT id, status, json FROM executions {where_clause} ORDER BY id DESC LIMIT {limit}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(values.iter()))?;
    while let Some(row) = rows.next()? {
        let json =
            match row.get_ref(2)? {
                rusqlite::types::ValueRef::Text(text) => Some(std::str::from_utf8(text).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
                })?),
                _ => None,
            };
        each(ExecutionId(row.get(0)?), parse_status(row, 1)?, json)?;
    }
    Ok(())
}

/// An execution that was running or paused when the daemon last stopped.
#[derive(Debug, Clone, Copy)]
pub struct UnfinishedProcess {
    pub id: ExecutionId,
    /// Its process group leader, if it had started.
    pub pid: Option<i32>,
    pub start_ticks: Option<u64>,
}

pub fn unfinished_processes(conn: &Connection) -> rusqlite::Result<Vec<UnfinishedProcess>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT id, pid, proc_start_ticks FROM executions WHERE status IN ({})",
        ExecutionStatus::sql(&WITH_PROCESS)
    ))?;
    let rows = stmt.query_map([], |row| {
        Ok(UnfinishedProcess {
            id: ExecutionId(row.get(0)?),
            pid: row.get(1)?,
            start_ticks: row.get::<_, Option<i64>>(2)?.map(|t| t as u64),
        })
    })?;
    rows.collect()
}

/// The agent token hashes of the executions that could have a process: running,
/// paused, or queued (a daemon can die between spawning a process and recording it).
pub fn possibly_spawned(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT agent_token_hash FROM executions WHERE status IN ({}) AND agent_token_hash IS NOT NULL",
        ExecutionStatus::sql(&[ExecutionStatus::Running, ExecutionStatus::Paused, ExecutionStatus::Queued])
    ))?;
    let rows = stmt.query_map([], |row| row.get(0))?;
    rows.collect()
}

/// Marks what was running or paused as interrupted; returns those executions as they
/// are now (final), for their events.
pub fn interrupt_unfinished(conn: &Connection, reason: &str, at: DateTime<Utc>) -> rusqlite::Result<Vec<Execution>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM executions WHERE status IN ({})",
        ExecutionStatus::sql(&WITH_PROCESS)
    ))?;
    let unfinished: Vec<Execution> = stmt.query_map([], execution_row)?.collect::<rusqlite::Result<_>>()?;
    let mut interrupted = Vec::with_capacity(unfinished.len());
    for execution in unfinished {
        let execution = Execution {
            status: ExecutionStatus::Interrupted,
            error: Some(reason.to_owned()),
            finished_at: Some(at),
            ..execution
        };
        mark_finished(conn, &execution)?;
        interrupted.push(execution);
    }
    Ok(interrupted)
}

/// An execution still queued when the daemon last stopped.
#[derive(Debug, Clone)]
pub struct QueuedExecution {
    pub execution: Execution,
    /// The request's own env.
    pub env: BTreeMap<String, String>,
}

/// Queued executions (and those waiting for approval) in their original order.
pub fn queued(conn: &Connection) -> rusqlite::Result<Vec<QueuedExecution>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS}, env FROM executions WHERE status IN ({}) ORDER BY queue_order",
        ExecutionStatus::sql(&[ExecutionStatus::Queued, ExecutionStatus::PendingApproval])
    ))?;
    let rows = stmt.query_map([], |row| {
        // `env` follows the columns.
        let env: String = row.get(COLUMN_COUNT)?;
        let env = serde_json::from_str(&env).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(COLUMN_COUNT, rusqlite::types::Type::Text, Box::new(e))
        })?;
        Ok(QueuedExecution { execution: execution_row(row)?, env })
    })?;
    rows.collect()
}

/// The largest id and queue order used so far.
pub fn high_water(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("SELECT coalesce(max(id), 0), coalesce(max(queue_order), 0) FROM executions", [], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })
}

/// Counts by status and provider.
pub fn count_by_status_and_provider(conn: &Connection) -> rusqlite::Result<Vec<(String, String, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT status, provider, count(*) FROM executions GROUP BY status, provider ORDER BY status, provider",
    )?;
    let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? as u64)))?;
    rows.collect()
}

/// Counts by status.
pub fn count_by_status(conn: &Connection) -> rusqlite::Result<BTreeMap<String, u64>> {
    let mut stmt = conn.prepare("SELECT status, count(*) FROM executions GROUP BY status")?;
    let rows = stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64)))?;
    rows.collect()
}

/// Lines with `n > after`, in order, at most `limit`.
pub fn output(conn: &Connection, id: ExecutionId, after: u64, limit: usize) -> rusqlite::Result<Vec<OutputLine>> {
    // The chunk that holds line `after + 1` may start up to a chunk's length before it.
    let mut stmt = conn.prepare_cached(
        "SELECT first_n, stream, text, ts FROM output_chunks WHERE execution_id = ?1 AND first_n > ?2 ORDER BY first_n",
    )?;
    let mut rows =
        stmt.query(params![id.0, after.min(i64::MAX as u64).saturating_sub(MAX_CHUNK_LINES as u64) as i64])?;
    let mut lines = Vec::new();
    while lines.len() < limit {
        let Some(row) = rows.next()? else { break };
        lines.extend(stored_chunk(row)?.into_iter().filter(|line| line.n > after));
    }
    lines.truncate(limit);
    Ok(lines)
}

/// The last `count` lines, in order.
pub fn output_tail(conn: &Connection, id: ExecutionId, count: usize) -> rusqlite::Result<Vec<OutputLine>> {
    let mut stmt = conn.prepare_cached(
        "SELECT first_n, stream, text, ts FROM output_chunks WHERE execution_id = ?1 ORDER BY first_n DESC",
    )?;
    let mut rows = stmt.query(params![id.0])?;
    let mut lines = Vec::new();
    while lines.len() < count {
        let Some(row) = rows.next()? else { break };
        lines.extend(stored_chunk(row)?.into_iter().rev());
    }
    lines.truncate(count);
    lines.reverse();
    Ok(lines)
}

/// The lines of a stored chunk (`first_n, stream, text, ts`; see migration 0010).
fn stored_chunk(row: &Row<'_>) -> rusqlite::Result<Vec<OutputLine>> {
    let first_n = row.get::<_, i64>(0)? as u64;
    let stream = OutputStream::from_stored(row.get_ref(1)?.as_str()?);
    let ts = ts_column(row, 3)?;
    let text = row.get_ref(2)?.as_str()?;
    Ok(chunk_lines(first_n, text).map(|(n, text)| OutputLine { n, stream, text: text.to_owned(), ts }).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_column_count_counts_the_columns() {
        assert_eq!(super::COLUMNS.split(',').count(), super::COLUMN_COUNT);
    }
}
