//! `Store`: the SQLite database. One writer thread commits every write, in batches (group
//! commit, see [`writer`]); reads come from an r2d2 pool on the blocking thread pool.
//! Actors hold a `Store` and call [`Store::write`] / [`Store::read`] with a closure over
//! the typed queries in the submodules; nothing else opens the database.

pub mod agent_activity;
pub mod approvals;
pub mod catalog;
pub mod events;
pub mod executions;
pub mod idempotency;
pub mod retention;
pub mod sessions;
mod writer;

use std::path::Path;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};

pub use events::{EventLog, OutputSource, PreparedChunk, MAX_CHUNK_LINES};
pub use writer::{EventSink, WriterStats};

/// Errors from the database, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the database at {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("migrating the database at {path}: {source}")]
    Migrate { path: String, source: rusqlite_migration::Error },
    #[error("database connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("{op}: {source}")]
    Query { op: &'static str, source: rusqlite::Error },
    #[error("{op}: commit failed: {failure}")]
    Commit { op: &'static str, failure: CommitFailure },
    #[error("the database writer has stopped")]
    Closed,
}

/// Why a transaction could not begin or commit, with SQLite's code when it gave one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CommitFailure {
    pub code: Option<rusqlite::ErrorCode>,
    pub message: String,
}

impl From<rusqlite::Error> for CommitFailure {
    fn from(e: rusqlite::Error) -> Self {
        CommitFailure { code: e.sqlite_error_code(), message: e.to_string() }
    }
}

/// A failure of the disk under the database rather than of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageTrouble {
    /// No space left (or the file may grow no further).
    Full,
    /// The disk or file refused the write (I/O error, read-only, locked by another
    /// program).
    Unavailable,
}

impl StoreError {
    /// Whether the database's disk, not the request, made the write fail: it may work
    /// again once there is room or the disk is back.
    pub fn storage_trouble(&self) -> Option<StorageTrouble> {
        use rusqlite::ErrorCode as C;
        let code = match self {
            StoreError::Commit { failure, .. } => failure.code,
            StoreError::Query { source, .. } => source.sqlite_error_code(),
            _ => None,
        }?;
        match code {
            C::DiskFull => Some(StorageTrouble::Full),
            C::SystemIoFailure | C::ReadOnly | C::CannotOpen | C::DatabaseBusy | C::DatabaseLocked => {
                Some(StorageTrouble::Unavailable)
            }
            _ => None,
        }
    }

    /// Whether the error is a UNIQUE or PRIMARY KEY violation (a duplicate name).
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            StoreError::Query {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )
    }
}

/// The database's WAL or shared-memory file, when one is there but cannot be written (a
/// directory in its place, a read-only or immutable file): what to name when the
/// database will not open.
pub fn unusable_companion(db: &Path) -> Option<std::path::PathBuf> {
    ["-wal", "-shm"].into_iter().find_map(|suffix| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = std::path::PathBuf::from(name);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        let writable = meta.is_file() && std::fs::OpenOptions::new().read(true).write(true).open(&path).is_ok();
        (!writable).then_some(path)
    })
}

/// Adds the operation's name to a rusqlite error.
pub trait QueryContext<T> {
    fn op(self, op: &'static str) -> Result<T, StoreError>;
}

impl<T> QueryContext<T> for rusqlite::Result<T> {
    fn op(self, op: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Query { op, source })
    }
}

/// The schema, one numbered file per step, applied in order, each in its own transaction.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../../migrations/0001_init.sql")),
        M::up(include_str!("../../migrations/0002_executions.sql")),
        M::up(include_str!("../../migrations/0003_events.sql")),
        M::up(include_str!("../../migrations/0004_approvals.sql")),
        M::up(include_str!("../../migrations/0005_output_by_execution_seq.sql")),
        M::up(include_str!("../../migrations/0006_sessions.sql")),
        M::up(include_str!("../../migrations/0007_execution_changes.sql")),
        M::up(include_str!("../../migrations/0008_idempotency_keys.sql")),
        M::up(include_str!("../../migrations/0009_final_execution_json.sql")),
        M::up(include_str!("../../migrations/0010_output_chunks.sql")),
        M::up(include_str!("../../migrations/0011_trust_boundary.sql")),
        M::up(include_str!("../../migrations/0012_worktree_isolation.sql")),
        M::up(include_str!("../../migrations/0013_merge_target.sql")),
        M::up(include_str!("../../migrations/0014_agent_activity.sql")),
        M::up(include_str!("../../migrations/0015_retention.sql")),
    ])
}

/// Settings every connection gets. WAL with `synchronous = NORMAL` survives a crash of
/// the process without losing a commit; a power loss may lose the last moments.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    // Savepoints' statement journals stay in memory rather than in temp files.
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY;")
}

/// Makes the database one whose free pages an incremental vacuum can give back
/// (retention frees space that way, a little at a time): rewritten once with `VACUUM`,
/// which for a database made before retention takes about as long as copying the file.
fn incremental_vacuum(conn: &Connection, shown: &str) -> rusqlite::Result<()> {
    const INCREMENTAL: i64 = 2;
    if conn.query_row("PRAGMA auto_vacuum", [], |row| row.get::<_, i64>(0))? == INCREMENTAL {
        return Ok(());
    }
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))?;
    if tables > 0 {
        tracing::info!(database = %shown, "rewriting the database once so that retention can give space back");
    }
    // Even an empty database has its header written by now (WAL mode): the setting
    // takes with the rewrite, which costs nothing then.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM")
}

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: r2d2::Pool<SqliteConnectionManager>,
    writer: writer::WriterHandle,
}

impl Store {
    /// Opens (creating if needed) the database, applies the migrations and starts the
    /// writer thread. Blocking: call before the actors start.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let open_err = |source| StoreError::Open { path: shown.clone(), source };
        let mut conn = Connection::open(path).map_err(open_err)?;
        configure(&conn).map_err(open_err)?;
        // Fails fast on a file that is not a database, or one another process locks.
        conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get::<_, String>(0)).map_err(open_err)?;
        // And, after the busy timeout, on one whose write lock another program holds
        // (otherwise every write would fail later, one by one).
        conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK").map_err(open_err)?;
        incremental_vacuum(&conn, &shown).map_err(open_err)?;
        migrations().to_latest(&mut conn).map_err(|source| StoreError::Migrate { path: shown.clone(), source })?;

        let manager = SqliteConnectionManager::file(path).with_init(|c| configure(c));
        // Local SQLite connections do not go stale: no validation query per checkout.
        let pool = r2d2::Pool::builder()
            .max_size(8)
            .test_on_check_out(false)
            .connection_timeout(Duration::from_secs(10))
            .build(manager)?;
        let log = EventLog::open(&conn).map_err(open_err)?;
        // The checkpointer thread checkpoints instead of the writer's commits, and a WAL
        // file grown by a burst is cut back once it has been copied over.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;").map_err(open_err)?;
        let checkpoints = Connection::open(path).map_err(open_err)?;
        configure(&checkpoints).map_err(open_err)?;
        Ok(Store { pool, writer: writer::WriterHandle::start(conn, checkpoints, log) })
    }

    /// Runs `f` inside the next group-commit transaction and answers once that
    /// transaction is committed. A failing `f` rolls back only its own changes.
    pub async fn write<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.writer.write(op, move |conn, _| f(conn)).await
    }

    /// Like [`Store::write`], and `f` may record events: they commit with its changes
    /// and are delivered after the commit.
    pub async fn record<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection, &mut EventLog) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.writer.write(op, f).await
    }

    /// Queues a write (which may record events) at once, in order, and returns a future
    /// of its commit, to await later.
    pub fn record_queued<T, F>(
        &self,
        op: &'static str,
        f: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>>
    where
        F: FnOnce(&Connection, &mut EventLog) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let answer = self.writer.enqueue(op, f);
        async move { answer.await.map_err(|_| StoreError::Closed)? }
    }

    /// Queues a write (which may record events) without waiting for its commit: it is
    /// committed in order with everything queued before it.
    pub fn record_detached<F>(&self, op: &'static str, f: F)
    where
        F: FnOnce(&Connection, &mut EventLog) -> rusqlite::Result<()> + Send + 'static,
    {
        self.writer.write_detached(op, f)
    }

    /// Where committed events go (set once, by the Supervisor, to the ClientRegistry).
    pub fn set_event_sink(&self, sink: EventSink) {
        self.writer.set_sink(sink)
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write("flush", |_| Ok(())).await
    }

    /// Runs a read-only query on a pooled connection, off the async threads.
    pub async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.get()?;
            f(&conn).op(op)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Moves the WAL's pages into the database file and empties the WAL, so that a
    /// stopped daemon leaves one self-contained file. Run at shutdown, after the flush.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        self.read("checkpoint", |c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))).await
    }

    /// Copies the WAL into the database file without waiting out writers (the file
    /// shrinks to what the last commit left, when a vacuum made it smaller).
    pub async fn checkpoint_passive(&self) -> Result<(), StoreError> {
        self.read("checkpoint", |c| c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))).await
    }

    /// Transactions the writer has ended: while it stays the same, the database has not
    /// changed.
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert!(migrations().validate().is_ok());
    }

    /// A database from before output was chunked keeps its lines: each becomes a chunk
    /// of one, read back by page, tail and replay as before.
    #[actix::test]
    async fn output_stored_line_by_line_survives_the_chunking_migration() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("old.db");
        {
            let mut conn = Connection::open(&path).expect("a new database opens");
            migrations().to_version(&mut conn, 9).expect("the schema before chunks");
            conn.execute_batch(
                "INSERT INTO executions (id, status, profile, provider, cwd, prompt, argv, env, created_at, queue_order)
                 VALUES (1, 'succeeded', 'p', 'p', '/', '', '[]', '{}', '2026-01-01T00:00:00.000Z', 1);
                 INSERT INTO execution_output (execution_id, n, stream, text, ts, seq) VALUES
                     (1, 1, 'stdout', 'one', '2026-01-01T00:00:01.000Z', 5),
                     (1, 2, 'stderr', 'two', '2026-01-01T00:00:02.000Z', 7),
                     (1, 3, 'stdout', 'three', '2026-01-01T00:00:03.000Z', 6);",
            )
            .expect("output stored line by line");
        }
        let store = Store::open(&path).expect("the old database migrates");
        let id = crate::domain::ExecutionId(1);
        let texts = |lines: Vec<crate::domain::OutputLine>| lines.into_iter().map(|l| l.text).collect::<Vec<_>>();
        let page = store.read("page", move |c| executions::output(c, id, 1, 10)).await.expect("a page reads");
        assert_eq!(page[0].stream, crate::domain::OutputStream::Stderr);
        assert_eq!(texts(page), ["two", "three"]);
        let tail = store.read("tail", move |c| executions::output_tail(c, id, 2)).await.expect("the tail reads");
        assert_eq!(texts(tail), ["two", "three"]);
        let filter = crate::domain::EventFilter { topics: vec!["*".into()], ..Default::default() };
        let replayed =
            store.read("replay", move |c| events::replay(c, &filter, 0, u64::MAX, 10)).await.expect("the replay reads");
        assert_eq!(replayed.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(store.read("last", events::last_seq).await.expect("the last seq reads"), 7);
    }

    /// A database made before retention becomes one whose free pages retention can give
    /// back (rewritten once), its rows intact; a new one is made that way.
    #[actix::test]
    async fn databases_are_made_or_converted_for_incremental_vacuum() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("old.db");
        {
            let mut conn = Connection::open(&path).expect("a new database opens");
            migrations().to_version(&mut conn, 14).expect("the schema before retention");
            conn.execute_batch(
                "INSERT INTO providers (name, max_concurrent, rate_per_minute, updated_at) VALUES ('kept', 1, 2, 'now')",
            )
            .expect("a row");
            let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
            assert_eq!(mode, 0, "made without it");
        }
        let auto_vacuum = |store: Store| async move {
            store.read("mode", |c| c.query_row("PRAGMA auto_vacuum", [], |r| r.get::<_, i64>(0))).await.unwrap()
        };
        let store = Store::open(&path).expect("the old database opens");
        assert_eq!(auto_vacuum(store.clone()).await, 2);
        let name: String =
            store.read("row", |c| c.query_row("SELECT name FROM providers", [], |r| r.get(0))).await.unwrap();
        assert_eq!(name, "kept");
        let fresh = Store::open(&dir.path().join("new.db")).expect("a new database opens");
        assert_eq!(auto_vacuum(fresh).await, 2);
    }

    #[actix::test]
    async fn writes_commit_and_reads_see_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.db")).unwrap();
        store
            .write("insert", |c| {
                c.execute(
                    "INSERT INTO providers (name, max_concurrent, rate_per_minute, updated_at) VALUES ('p', 1, 2, 'now')",
                    [],
                )
            })
            .await
            .unwrap();
        let n: i64 =
            store.read("count", |c| c.query_row("SELECT count(*) FROM providers", [], |r| r.get(0))).await.unwrap();
        assert_eq!(n, 1);
    }

    #[actix::test]
    async fn a_failing_write_does_not_spoil_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.db")).unwrap();
        let insert = |name: &'static str| {
            move |c: &Connection| {
                c.execute(
                    "INSERT INTO providers (name, max_concurrent, rate_per_minute, updated_at) VALUES (?1, 1, 1, 'now')",
                    [name],
                )
            }
        };
        let (a, dup, b) = tokio::join!(
            store.write("a", insert("a")),
            store.write("dup", insert("a")),
            store.write("b", insert("b")),
        );
        assert!(a.is_ok() && b.is_ok());
        assert!(dup.unwrap_err().is_unique_violation());
        let n: i64 =
            store.read("count", |c| c.query_row("SELECT count(*) FROM providers", [], |r| r.get(0))).await.unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.db");
        std::fs::write(&path, vec![b'x'; 8192]).unwrap();
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("bad.db"), "{err}");
    }
}
