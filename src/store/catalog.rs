//! Rows of the catalog: workspaces, and the profiles and provider limits made over the
//! API. The Catalog (workspaces, profiles) and the ExecutionMonitor (provider limits) load
//! them at start and write them through the store.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, Row};

use crate::domain::Word;
use crate::domain::{
    format_ts, parse_ts, AgentFormat, ApprovalPolicy, Isolation, Origin, Profile, ProfileSpec, ProviderLimits,
    SandboxMode, Workspace, WorkspaceId,
};

fn conversion_error(column: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e))
}

/// Reads a timestamp column written by [`format_ts`].
pub fn ts_column(row: &Row<'_>, column: usize) -> rusqlite::Result<DateTime<Utc>> {
    let text: String = row.get(column)?;
    parse_ts(&text).map_err(|e| conversion_error(column, e))
}

fn json_column<T: serde::de::DeserializeOwned>(row: &Row<'_>, column: usize) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|e| conversion_error(column, e))
}

fn to_json<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

pub fn insert_workspace(
    conn: &Connection,
    name: &str,
    path: &str,
    created_at: DateTime<Utc>,
) -> rusqlite::Result<Workspace> {
    conn.prepare_cached("INSERT INTO workspaces (name, path, created_at) VALUES (?1, ?2, ?3)")?.execute(params![
        name,
        path,
        format_ts(&created_at)
    ])?;
    Ok(Workspace {
        id: WorkspaceId(conn.last_insert_rowid()),
        name: name.to_owned(),
        path: path.to_owned(),
        created_at,
    })
}

pub fn delete_workspace(conn: &Connection, id: WorkspaceId) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM workspaces WHERE id = ?1")?.execute([id.0])
}

pub fn all_workspaces(conn: &Connection) -> rusqlite::Result<Vec<Workspace>> {
    let mut stmt = conn.prepare("SELECT id, name, path, created_at FROM workspaces ORDER BY id")?;
    let rows = stmt.query_map([], |row| {
        Ok(Workspace {
            id: WorkspaceId(row.get(0)?),
            name: row.get(1)?,
            path: row.get(2)?,
            created_at: ts_column(row, 3)?,
        })
    })?;
    rows.collect()
}

pub fn upsert_profile(conn: &Connection, profile: &Profile, now: DateTime<Utc>) -> rusqlite::Result<()> {
    let spec = &profile.spec;
    let continue_command = spec.continue_command.as_ref().map(to_json).transpose()?;
    conn.prepare_cached(
        "INSERT INTO profiles (name, provider, command, continue_command, approval, timeout_s, env, created_at, updated_at,
             sandbox, isolation, format)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11)
         ON CONFLICT (name) DO UPDATE SET provider = ?2, command = ?3, continue_command = ?4,
             approval = ?5, timeout_s = ?6, env = ?7, updated_at = ?8, sandbox = ?9, isolation = ?10, format = ?11",
    )?
    .execute(params![
        profile.name,
        spec.provider,
        to_json(&spec.command)?,
        continue_command,
        spec.approval.as_str(),
        spec.timeout_s.map(|t| t as i64),
        to_json(&spec.env)?,
        format_ts(&now),
        spec.sandbox.as_str(),
        spec.isolation.as_str(),
        spec.format.as_str(),
    ])?;
    Ok(())
}

pub fn delete_profile(conn: &Connection, name: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM profiles WHERE name = ?1")?.execute([name])
}

pub fn all_profiles(conn: &Connection) -> rusqlite::Result<Vec<Profile>> {
    let mut stmt = conn.prepare(
        "SELECT name, provider, command, continue_command, approval, timeout_s, env, sandbox, isolation, format
         FROM profiles ORDER BY name",
    )?;
    let rows = stmt.query_map([], |row| {
        let approval: String = row.get(4)?;
        let continue_command: Option<String> = row.get(3)?;
        Ok(Profile {
            name: row.get(0)?,
            spec: ProfileSpec {
                provider: row.get(1)?,
                command: json_column(row, 2)?,
                continue_command: continue_command
                    .map(|text| serde_json::from_str(&text).map_err(|e| conversion_error(3, e)))
                    .transpose()?,
                approval: ApprovalPolicy::parse(&approval).unwrap_or_default(),
                timeout_s: row.get::<_, Option<i64>>(5)?.map(|t| t as u64),
                env: json_column(row, 6)?,
                sandbox: SandboxMode::parse(row.get_ref(7)?.as_str()?).unwrap_or_default(),
                isolation: Isolation::parse(row.get_ref(8)?.as_str()?).unwrap_or_default(),
                format: AgentFormat::parse(row.get_ref(9)?.as_str()?).unwrap_or_default(),
            },
            origin: Origin::Api,
        })
    })?;
    rows.collect()
}

pub fn upsert_provider(
    conn: &Connection,
    name: &str,
    limits: ProviderLimits,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO providers (name, max_concurrent, rate_per_minute, updated_at, max_cost_usd_per_day,
             max_tokens_per_day) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (name) DO UPDATE SET max_concurrent = ?2, rate_per_minute = ?3, updated_at = ?4,
             max_cost_usd_per_day = ?5, max_tokens_per_day = ?6",
    )?
    .execute(params![
        name,
        limits.max_concurrent,
        limits.rate_per_minute,
        format_ts(&now),
        limits.max_cost_usd_per_day,
        limits.max_tokens_per_day.map(|t| t as i64)
    ])?;
    Ok(())
}

pub fn all_providers(conn: &Connection) -> rusqlite::Result<Vec<(String, ProviderLimits)>> {
    let mut stmt = conn.prepare(
        "SELECT name, max_concurrent, rate_per_minute, max_cost_usd_per_day, max_tokens_per_day
         FROM providers ORDER BY name",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get(0)?,
            ProviderLimits {
                max_concurrent: row.get(1)?,
                rate_per_minute: row.get(2)?,
                max_cost_usd_per_day: row.get(3)?,
                max_tokens_per_day: row.get::<_, Option<i64>>(4)?.map(|t| t.max(0) as u64),
            },
        ))
    })?;
    rows.collect()
}
