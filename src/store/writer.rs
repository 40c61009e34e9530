//! The one writer of the database: a dedicated thread that takes every queued write,
//! runs as many as are waiting inside one transaction (each in its own savepoint, so one
//! failure spoils nothing else), commits once and only then answers them and hands the
//! batch's events to the event sink, in `seq` order. A burst of output lines therefore
//! costs a few commits, not one each. Checkpoints (copying the WAL into the database
//! file, with its fsync) run on a thread of their own; the writer only copies the little
//! that is left itself when the WAL must start over (see `RESTART_AFTER_FRAMES`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::events::EventLog;
use super::{CommitFailure, QueryContext, StoreError};
use crate::domain::Event;

/// Receives every committed batch's events, in order (the ClientRegistry).
pub type EventSink = Box<dyn Fn(Vec<Arc<Event>>) + Send>;

/// The most writes one transaction takes, so a flood still commits regularly.
const MAX_BATCH: usize = 4096;
/// The longest one transaction takes more writes: a commit frees the writers waiting
/// for it (an agent's output capture among them) to queue more while the next batch runs,
/// and a write queued behind a flood's batch waits at most this long for its commit.
/// Since output is stored in chunks, 2 ms batches persist a flood as fast as 10 ms ones
/// did (B3; BENCHMARKS.md has the figures).
const MAX_BATCH_TIME: Duration = Duration::from_millis(2);

/// What runs after the commit: tells the waiting caller how it went.
type Completion = Box<dyn FnOnce(Result<(), CommitFailure>) + Send>;
/// One write: runs inside the batch transaction and returns its completion, or, when no
/// transaction could be begun, tells its caller so at once without running.
type Job = Box<dyn FnOnce(Result<(&Connection, &mut EventLog), CommitFailure>) -> Option<Completion> + Send>;

/// Counters of the writer (group commit at work), shown by `/api/v1/status`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WriterStats {
    pub commits: u64,
    pub writes: u64,
    pub largest_batch: u64,
    pub commit_micros_total: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    largest_batch: AtomicU64,
    commit_micros_total: AtomicU64,
    /// Set by the checkpointer when the writer should copy the rest of the WAL and start
    /// it over (see `RESTART_AFTER_FRAMES`); cleared by the writer when it has.
    restart_wanted: AtomicBool,
}

#[derive(Clone)]
pub(super) struct WriterHandle {
    jobs: mpsc::Sender<Job>,
    counters: Arc<Counters>,
    sink: Arc<Mutex<Option<EventSink>>>,
}

impl WriterHandle {
    /// Starts the writer on `conn` and the checkpointer on `checkpoints` (a second
    /// connection to the same database).
    pub(super) fn start(conn: Connection, checkpoints: Connection, log: EventLog) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let counters = Arc::new(Counters::default());
        let sink: Arc<Mutex<Option<EventSink>>> = Arc::new(Mutex::new(None));
        let (thread_counters, thread_sink, checkpoint_counters) = (counters.clone(), sink.clone(), counters.clone());
        // One pending request at most: commits while a checkpoint runs coalesce.
        let (committed, commits) = mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("warden-store-writer".into())
            .spawn(move || run(conn, log, queue, &thread_counters, &thread_sink, &committed))
            .expect("spawning the store writer thread");
        std::thread::Builder::new()
            .name("warden-store-checkpoint".into())
            .spawn(move || checkpoint_after_commits(checkpoints, commits, &checkpoint_counters))
            .expect("spawning the store checkpoint thread");
        WriterHandle { jobs, counters, sink }
    }

    pub(super) fn set_sink(&self, sink: EventSink) {
        if let Ok(mut slot) = self.sink.lock() {
            *slot = Some(sink);
        }
    }

    pub(super) async fn write<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection, &mut EventLog) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.enqueue(op, f).await.map_err(|_| StoreError::Closed)?
    }

    /// Queues a write now (so writes keep the order they were queued in) and returns
    /// where its outcome will arrive.
    pub(super) fn enqueue<T, F>(&self, op: &'static str, f: F) -> oneshot::Receiver<Result<T, StoreError>>
    where
        F: FnOnce(&Connection, &mut EventLog) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |db| {
            let (conn, log) = match db {
                Ok(db) => db,
                Err(failure) => {
                    let _ = reply.send(Err(StoreError::Commit { op, failure }));
                    return None;
                }
            };
            let result = in_savepoint(conn, log, f).op(op);
            Some(Box::new(move |commit| {
                let outcome = match commit {
                    Ok(()) => result,
                    Err(failure) => Err(StoreError::Commit { op, failure }),
                };
                let _ = reply.send(outcome);
            }))
        });
        // A closed writer drops the job, and with it `reply`: the answer is Closed.
        let _ = self.jobs.send(job);
        answer
    }

    pub(super) fn write_detached<F>(&self, op: &'static str, f: F)
    where
        F: FnOnce(&Connection, &mut EventLog) -> rusqlite::Result<()> + Send + 'static,
    {
        let job: Job = Box::new(move |db| {
            let (conn, log) = match db {
                Ok(db) => db,
                Err(failure) => {
                    tracing::error!(error = %failure, op, "detached write lost: no transaction");
                    return None;
                }
            };
            if let Err(e) = in_savepoint(conn, log, f) {
                tracing::error!(error = %e, op, "detached write failed");
            }
            Some(Box::new(move |commit| {
                if let Err(e) = commit {
                    tracing::error!(error = %e, op, "detached write lost: commit failed");
                }
            }))
        });
        if self.jobs.send(job).is_err() {
            tracing::error!(op, "detached write dropped: the store writer has stopped");
        }
    }

    /// Transactions ended so far: unchanged means nothing was written meanwhile.
    pub(super) fn commits(&self) -> u64 {
        self.counters.commits.load(Ordering::Acquire)
    }

    pub(super) fn stats(&self) -> WriterStats {
        let c = &self.counters;
        WriterStats {
            commits: c.commits.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
            commit_micros_total: c.commit_micros_total.load(Ordering::Relaxed),
        }
    }
}

/// Runs `f` in a savepoint: its changes (and events) stay if it succeeds and vanish if
/// it fails.
fn in_savepoint<T>(
    conn: &Connection,
    log: &mut EventLog,
    f: impl FnOnce(&Connection, &mut EventLog) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let mark = log.mark();
    conn.execute_batch("SAVEPOINT job")?;
    match f(conn, log) {
        Ok(value) => {
            conn.execute_batch("RELEASE job")?;
            Ok(value)
        }
        Err(e) => {
            log.rollback_to(mark);
            conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

/// The longest the WAL goes without a checkpoint while commits keep coming.
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(200);

/// Copies committed pages from the WAL into the database file after commits, at most
/// every `CHECKPOINT_PAUSE`, without waiting for anyone (PASSIVE). Once the WAL is long,
/// it copies again at once after every commit, until a pass is short, and then leaves the
/// writer the little that is left (see `RESTART_AFTER_FRAMES`). Ends when the writer has
/// stopped.
fn checkpoint_after_commits(conn: Connection, commits: mpsc::Receiver<()>, counters: &Counters) {
    // A pass that commits arrived during leaves the database file's copied pages unsynced
    // (SQLite syncs it only when a pass copies everything): the last pass, the writer's,
    // would then wait for all of them. They are synced here instead, after each pass.
    let database = conn.path().and_then(|path| std::fs::File::open(path).ok());
    while commits.recv().is_ok() {
        let started = Instant::now();
        let frames = match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(1)) {
            Ok(frames) => frames,
            Err(e) => {
                tracing::warn!(error = %e, "checkpoint failed; the next commit tries again");
                0
            }
        };
        if frames < RESTART_AFTER_FRAMES {
            std::thread::sleep(CHECKPOINT_PAUSE);
            continue;
        }
        if let Some(Err(e)) = database.as_ref().map(std::fs::File::sync_data) {
            tracing::warn!(error = %e, "syncing the database file failed; the writer's checkpoint syncs it");
        }
        if started.elapsed() <= SHORT_PASS || frames >= FORCE_RESTART_AFTER_FRAMES {
            counters.restart_wanted.store(true, Ordering::Release);
            // No pass of its own meanwhile: the writer's would find this one running.
            while counters.restart_wanted.load(Ordering::Acquire) {
                if commits.recv().is_err() {
                    return;
                }
            }
        }
    }
}

/// The WAL only starts over when a write begins after everything in it was copied into
/// the database, which a steady stream of commits never allows: it would grow without
/// end. Once it holds this many frames (16 MiB of 4 KiB pages), the checkpointer copies
/// after every commit, each pass taking what the commits during the previous one wrote,
/// so the passes get shorter. After a pass of at most `SHORT_PASS`, the writer copies
/// what was committed during it itself, between two transactions, and its next
/// transaction starts the log over. A writer that copied all 16 MiB itself stalled every
/// write for tens of milliseconds, several times per million lines of output (B9).
const RESTART_AFTER_FRAMES: i64 = 4096;
/// A pass this short leaves the writer about as little to copy.
const SHORT_PASS: Duration = Duration::from_millis(3);
/// When the passes do not get shorter (writes outpace the copying), the writer copies
/// the rest itself at this size (48 MiB), however long that takes.
const FORCE_RESTART_AFTER_FRAMES: i64 = 3 * RESTART_AFTER_FRAMES;

fn start_the_log_over(conn: &Connection) {
    let copied =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok(row.get::<_, i64>(1)? == row.get::<_, i64>(2)?));
    match copied {
        Ok(true) => {}
        // A reader still on an old snapshot: the checkpointer's next rounds tell again.
        Ok(false) => tracing::debug!("the WAL could not be copied whole; trying again later"),
        Err(e) => tracing::warn!(error = %e, "checkpoint failed; trying again later"),
    }
}

fn run(
    conn: Connection,
    mut log: EventLog,
    queue: mpsc::Receiver<Job>,
    counters: &Counters,
    sink: &Mutex<Option<EventSink>>,
    committed: &mpsc::SyncSender<()>,
) {
    // Ends when every handle is dropped and the queue is drained.
    while let Ok(first) = queue.recv() {
        if counters.restart_wanted.load(Ordering::Acquire) {
            start_the_log_over(&conn);
            counters.restart_wanted.store(false, Ordering::Release);
        }
        let started = Instant::now();
        if let Err(failure) = conn.execute_batch("BEGIN IMMEDIATE").map_err(CommitFailure::from) {
            // Without a transaction nothing may run (a savepoint would commit on its
            // own): every waiting write is told, and the next one tries again.
            tracing::error!(error = %failure, "store writer cannot begin a transaction");
            let _ = first(Err(failure.clone()));
            while let Ok(job) = queue.try_recv() {
                let _ = job(Err(failure.clone()));
            }
            continue;
        }
        let batch_start = log.mark();
        let mut completions: Vec<Completion> = Vec::new();
        completions.extend(first(Ok((&conn, &mut log))));
        while completions.len() < MAX_BATCH && started.elapsed() < MAX_BATCH_TIME {
            match queue.try_recv() {
                Ok(job) => completions.extend(job(Ok((&conn, &mut log)))),
                Err(_) => break,
            }
        }
        let commit = conn.execute_batch("COMMIT").map_err(CommitFailure::from);
        // Counted before anyone hears of the batch: a reader that saw one of its events
        // also sees that the database changed (cached list pages rely on it).
        counters.commits.fetch_add(1, Ordering::Release);
        match &commit {
            Ok(()) => {
                let _ = committed.try_send(());
            }
            Err(e) => {
                tracing::error!(error = %e, writes = completions.len(), "store commit failed");
                let _ = conn.execute_batch("ROLLBACK");
                log.rollback_to(batch_start);
            }
        }
        let events = log.take();
        if !events.is_empty() {
            if let Ok(sink) = sink.lock() {
                if let Some(deliver) = sink.as_ref() {
                    deliver(events);
                }
            }
        }
        let n = completions.len() as u64;
        counters.writes.fetch_add(n, Ordering::Relaxed);
        counters.largest_batch.fetch_max(n, Ordering::Relaxed);
        counters.commit_micros_total.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        crate::metrics::metrics().commit_latency.observe(started.elapsed().as_secs_f64());
        crate::metrics::metrics().batch_size.observe(n as f64);
        for done in completions {
            done(commit.clone());
        }
    }
    tracing::debug!("store writer stopped");
}
