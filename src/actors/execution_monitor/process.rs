//! Child processes of executions: spawn one in its own process group on one of the
//! [`CapturePool`]'s threads, capture stdout and stderr line by line into the store there
//! (the lines of each pipe read in chunks of up to 256, one stored row each, so a flood
//! costs few rows and commits), signal its whole group, and recognise it again after a
//! daemon crash. The ExecutionMonitor is the only caller.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{oneshot, Semaphore};

use actix::Recipient;

use super::agent::AgentProgress;
use crate::agent::{AgentReader, Batch};
use crate::credentials::token_hash;
use crate::domain::{now, AgentFormat, OutputStream, SandboxApplied, Tokens};
use crate::sandbox::{Confinement, Sandboxer};
use crate::store::agent_activity::{self, SpendAccount};
use crate::store::{OutputSource, PreparedChunk, Store, MAX_CHUNK_LINES};

/// Lines longer than this are split, so one line can never hold the whole output.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Output chunks of one execution queued for the store and not yet taken by its writer,
/// each of at most `MAX_CHUNK_LINES` lines (and at most a 64 KiB chunk read from the
/// pipe). When they are all in flight, capture stops reading the pipe, so a flooding
/// process blocks on its writes instead of growing the daemon's memory. The store has
/// one writer, in order: these bounds are also all a flood can queue ahead of another
/// execution's line: fewer, smaller writes in flight keep the others' latency low
/// during a flood (B9) without slowing the flood itself (B3); BENCHMARKS.md has the
/// figures.
const WRITES_IN_FLIGHT: usize = 2;
/// How long output may keep flowing after the process group is gone (a process that
/// escaped the group with setsid may hold the pipes open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

/// What to run.
pub struct SpawnSpec {
    /// Whose output this is, for its events.
    pub source: OutputSource,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    /// How to confine it; `None` runs it unsandboxed (`sandbox = "off"`).
    pub confinement: Option<Confinement>,
    /// For an agent that writes a JSON stream: how to read it (none for `text`).
    pub agent: Option<AgentCapture>,
}

/// How an agent execution's stdout is read into agent activity, and who is told.
pub struct AgentCapture {
    pub format: AgentFormat,
    /// What a resumed conversation had used before (see `AgentReader::new`).
    pub conversation: Option<Tokens>,
    /// Whose spend it is.
    pub provider: String,
    /// Told after each stored batch (the monitor).
    pub progress: Recipient<AgentProgress>,
}

/// The stdout side of an agent execution's capture: its reader, and where its activity
/// goes.
struct AgentSide {
    reader: AgentReader,
    provider: Arc<str>,
    progress: Recipient<AgentProgress>,
}

impl AgentSide {
    fn new(capture: AgentCapture) -> Option<Self> {
        Some(AgentSide {
            reader: AgentReader::new(capture.format, capture.conversation)?,
            provider: capture.provider.into(),
            progress: capture.progress,
        })
    }
}

/// A started process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    /// The leader's pid, which is also the group id.
    pub pid: i32,
    /// The leader's start time in clock ticks since boot, to tell it from a later
    /// process that reuses the pid.
    pub start_ticks: Option<u64>,
    /// The confinement it got.
    pub sandbox: SandboxApplied,
}

/// How a process group ended, once all of its output is queued for the store.
#[derive(Debug, Clone, Copy)]
pub struct ProcessExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub lines: u64,
}

impl ProcessExit {
    fn from_status(status: std::io::Result<ExitStatus>, lines: u64) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match status {
            Ok(status) => ProcessExit { code: status.code(), signal: status.signal(), lines },
            Err(e) => {
                tracing::error!(error = %e, "waiting for a child failed");
                ProcessExit { code: None, signal: None, lines }
            }
        }
    }
}

/// The threads that run executions' processes: each spawns its children and captures
/// their output, so that a flooding execution's line work runs beside the actors'
/// thread and beside the other executions' capture, not in their way (the operating
/// system shares the cores among them). A new process goes to the thread with the
/// fewest running.
pub struct CapturePool {
    threads: Vec<CaptureThread>,
}

/// One capture thread: where its tasks are sent, its runtime (a confined spawn on
/// another thread registers the process's pipes with it), and how many processes it
/// runs.
#[derive(Clone)]
struct CaptureThread {
    thread: actix_rt::ArbiterHandle,
    runtime: tokio::runtime::Handle,
    running: Arc<AtomicUsize>,
}

impl CapturePool {
    /// Starts one thread per core, at most 4. Call inside the actor system.
    pub fn start() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
        let threads = (0..cores)
            .filter_map(|_| {
                let thread = actix_rt::Arbiter::new().handle();
                let (sent, runtime) = std::sync::mpsc::sync_channel(1);
                thread.spawn_fn(move || {
                    let _ = sent.send(tokio::runtime::Handle::current());
                });
                let runtime = runtime.recv().ok()?;
                Some(CaptureThread { thread, runtime, running: Arc::new(AtomicUsize::new(0)) })
            })
            .collect();
        CapturePool { threads }
    }

    fn least_busy(&self) -> &CaptureThread {
        self.threads.iter().min_by_key(|t| t.running.load(Ordering::Relaxed)).expect("at least one thread")
    }
}

/// Holds an execution's output back: capture begins once this is dropped, after the
/// monitor has queued the execution's start, so `execution.started` comes before its
/// first line.
pub struct OutputGate {
    _opens_when_dropped: oneshot::Sender<()>,
}

/// Spawns the process in a new process group with stdin closed, on one of the pool's
/// threads (or, confined, on a sandbox thread that hands it to one of them), with a task
/// there that captures its output (once the gate is dropped) and, when it has ended and
/// its group is gone, calls `on_exit`. Waits for the spawn itself (about a
/// millisecond). Errors are for the user: "command not found: …".
pub fn spawn(
    pool: &CapturePool,
    mut spec: SpawnSpec,
    store: Store,
    on_exit: impl FnOnce(ProcessExit) + Send + 'static,
) -> Result<(Spawned, OutputGate), String> {
    let capture = pool.least_busy().clone();
    let (gate, opened) = oneshot::channel();
    let (answer, spawned) = std::sync::mpsc::sync_channel(1);
    match spec.confinement.take() {
        None => {
            let thread = capture.thread.clone();
            let sent = thread.spawn_fn(move || {
                let started = start(&spec, SandboxApplied::Off);
                let _ = answer.send(started.map(|(child, spawned)| {
                    capture_here(
                        child,
                        spawned.pid,
                        (spec.source, spec.agent),
                        store,
                        opened,
                        capture.running,
                        on_exit,
                    );
                    spawned
                }));
            });
            if !sent {
                return Err("the daemon is stopping: no thread is left to run the process".into());
            }
        }
        // A sandbox thread confines itself and spawns, then hands the process to the
        // capture thread; the monitor waits only for the spawn, as it does without one.
        Some(confinement) => {
            let sandboxer = confinement.sandboxer.clone();
            Sandboxer::run_confined(confinement, move |confined| {
                let _entered = capture.runtime.enter();
                let started = confined
                    .map_err(|e| format!("the sandbox could not be set up: {e}"))
                    .and_then(|applied| start(&spec, applied));
                let spawned = started.map(|(child, spawned)| {
                    let pid = spawned.pid;
                    capture.thread.clone().spawn_fn(move || {
                        capture_here(child, pid, (spec.source, spec.agent), store, opened, capture.running, on_exit);
                        sandboxer.prepare_next();
                    });
                    spawned
                });
                let _ = answer.send(spawned);
            })
            .map_err(|e| format!("the sandbox could not be set up: {e}"))?;
        }
    }
    let spawned = spawned.recv().map_err(|_| "the thread that runs processes stopped".to_owned())??;
    Ok((spawned, OutputGate { _opens_when_dropped: gate }))
}

/// Starts the process (in a runtime context: its pipes and its exit are watched by the
/// capture thread's runtime). A confined caller has already confined itself.
fn start(spec: &SpawnSpec, sandbox: SandboxApplied) -> Result<(tokio::process::Child, Spawned), String> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err("the profile's command is empty".into());
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(&spec.cwd)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    // No `pre_exec`: without one, the standard library uses posix_spawn instead of fork
    // (the daemon's SIGXFSZ handler is reset to the default by exec by itself). A
    // sandbox is the spawning thread's, not code between fork and exec.
    let child = command.spawn().map_err(|e| describe_spawn_error(program, &spec.cwd, &e))?;
    let pid = child.id().map(|p| p as i32).ok_or("the process ended before it could be tracked")?;
    Ok((child, Spawned { pid, start_ticks: start_ticks(pid), sandbox }))
}

/// Captures a started process's output and waits for its end, on the capture thread.
fn capture_here(
    mut child: tokio::process::Child,
    pid: i32,
    (source, agent): (OutputSource, Option<AgentCapture>),
    store: Store,
    gate: oneshot::Receiver<()>,
    running: Arc<AtomicUsize>,
    on_exit: impl FnOnce(ProcessExit) + 'static,
) {
    let id = source.execution_id;
    let sink = OutputSink {
        source: Arc::new(source),
        store,
        in_flight: Arc::new(Semaphore::new(WRITES_IN_FLIGHT)),
        counter: Arc::new(AtomicU64::new(0)),
    };
    let counter = sink.counter.clone();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    running.fetch_add(1, Ordering::Relaxed);
    actix_rt::spawn(async move {
        // Dropped or sent, the gate opens the same way.
        let _ = gate.await;
        let agent = agent.and_then(AgentSide::new);
        let stdout = stdout.map(|out| actix_rt::spawn(capture(out, OutputStream::Stdout, sink.clone(), agent)));
        let stderr = stderr.map(|err| actix_rt::spawn(capture(err, OutputStream::Stderr, sink, None)));
        let status = child.wait().await;
        // The leader is gone: take every process left in its group with it.
        signal_group(pid, Signal::SIGKILL);
        let drain = async {
            if let Some(task) = stdout {
                let _ = task.await;
            }
            if let Some(task) = stderr {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(DRAIN_AFTER_EXIT, drain).await.is_err() {
            tracing::warn!(execution = %id, "output pipes stayed open after the process group ended");
        }
        running.fetch_sub(1, Ordering::Relaxed);
        on_exit(ProcessExit::from_status(status, counter.load(Ordering::Relaxed)));
    });
}

fn describe_spawn_error(program: &str, cwd: &std::path::Path, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound if !cwd.is_dir() => {
            format!("the directory {} no longer exists", cwd.display())
        }
        std::io::ErrorKind::NotFound => format!("command not found: {program}"),
        std::io::ErrorKind::PermissionDenied => format!("permission denied running {program}"),
        _ => format!("cannot run {program}: {e}"),
    }
}

/// Where an execution's output goes: numbered from one counter across both streams (in
/// the order the chunks are queued, which is the order of their seqs), stored as
/// events, with a bounded number of chunks in flight.
#[derive(Clone)]
struct OutputSink {
    source: Arc<OutputSource>,
    store: Store,
    in_flight: Arc<Semaphore>,
    counter: Arc<AtomicU64>,
}

impl OutputSink {
    /// Queues a read's chunks for the store, in order; waits first while too many are
    /// in flight (backpressure on the process). An agent's lines are read into agent
    /// activity here, and stored with them.
    async fn persist(
        &self,
        stream: OutputStream,
        chunks: Vec<Chunk>,
        ts: DateTime<Utc>,
        mut agent: Option<&mut AgentSide>,
    ) {
        for chunk in chunks {
            let Ok(permit) = self.in_flight.clone().acquire_owned().await else { return };
            let activity = agent.as_deref_mut().map(|side| side.reader.read_lines(&chunk.text));
            // Numbered and queued with no wait in between: both streams' capture tasks run
            // on this thread, so line numbers follow the order the chunks are stored in.
            let first_n = self.counter.fetch_add(chunk.lines, Ordering::Relaxed) + 1;
            let mut prepared = PreparedChunk::new(&self.source, first_n, stream, ts, chunk.text);
            match (activity.filter(|batch| !batch.is_empty()), agent.as_deref()) {
                (Some(batch), Some(side)) => {
                    let stored = self.store_activity(side, batch, ts, move |c, log| {
                        let recorded = log.record_output(c, &mut prepared);
                        drop(permit);
                        recorded
                    });
                    actix_rt::spawn(stored);
                }
                _ => {
                    // The chunk comes back once stored, so that it is freed on this
                    // thread, which allocated it.
                    let committed = self.store.record_queued("insert output", move |c, log| {
                        let recorded = log.record_output(c, &mut prepared);
                        // Taken into the transaction: capture may queue the next chunk
                        // while this batch commits, so the writer never waits for it.
                        drop(permit);
                        recorded.map(|()| prepared)
                    });
                    actix_rt::spawn(async move {
                        if let Err(e) = committed.await {
                            tracing::error!(error = %e, "storing output failed");
                        }
                    });
                }
            }
        }
    }

    /// Stores an agent batch after what `first` stores (its output lines), in one
    /// transaction, then tells the monitor.
    fn store_activity(
        &self,
        side: &AgentSide,
        batch: Batch,
        ts: DateTime<Utc>,
        first: impl FnOnce(&rusqlite::Connection, &mut crate::store::EventLog) -> rusqlite::Result<()> + Send + 'static,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let (source, provider, progress) = (self.source.clone(), side.provider.clone(), side.progress.clone());
        let day = ts.format("%Y-%m-%d").to_string();
        let committed = self.store.record_queued("insert agent output", move |c, log| {
            first(c, log)?;
            let account = SpendAccount { provider: &provider, day: &day };
            agent_activity::record(c, log, &source, &account, &batch)?;
            Ok(AgentProgress {
                id: source.execution_id,
                summary: batch.summary,
                provider: provider.to_string(),
                day,
                spent: batch.spent,
            })
        });
        async move {
            match committed.await {
                Ok(stored) => progress.do_send(stored),
                Err(e) => tracing::error!(error = %e, "storing agent output failed"),
            }
        }
    }
}

/// Lines of one stream joined by `\n` (a line never holds one), at most
/// `MAX_CHUNK_LINES` of them.
struct Chunk {
    text: String,
    lines: u64,
}

/// Cuts what a read gave into chunks of lines.
#[derive(Default)]
struct Chunker {
    full: Vec<Chunk>,
    text: String,
    lines: u64,
}

impl Chunker {
    /// One line's bytes, without its `\n` (a `\r` before it is dropped; invalid UTF-8
    /// is decoded lossily).
    fn push(&mut self, bytes: &[u8]) {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if self.lines > 0 {
            self.text.push('\n');
        }
        self.text.push_str(&String::from_utf8_lossy(bytes));
        self.lines += 1;
        if self.lines == MAX_CHUNK_LINES as u64 {
            self.full.push(Chunk { text: std::mem::take(&mut self.text), lines: self.lines });
            self.lines = 0;
        }
    }

    /// The chunks so far, the last one possibly short.
    fn take(&mut self) -> Vec<Chunk> {
        if self.lines > 0 {
            self.full.push(Chunk { text: std::mem::take(&mut self.text), lines: self.lines });
            self.lines = 0;
        }
        std::mem::take(&mut self.full)
    }
}

/// Reads one stream to its end, queueing each read's lines in chunks.
async fn capture(reader: impl AsyncRead + Unpin, stream: OutputStream, sink: OutputSink, mut agent: Option<AgentSide>) {
    let id = sink.source.execution_id;
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    // A line that a read ended in the middle of.
    let mut line: Vec<u8> = Vec::new();
    let mut chunker = Chunker::default();
    loop {
        let chunk = match reader.fill_buf().await {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::warn!(execution = %id, error = %e, "reading output failed");
                break;
            }
        };
        if chunk.is_empty() {
            break;
        }
        let read_at = now();
        let mut rest = chunk;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) if line.is_empty() && end <= MAX_LINE_BYTES => {
                    chunker.push(&rest[..end]);
                    rest = &rest[end + 1..];
                }
                Some(end) if line.len() + end <= MAX_LINE_BYTES => {
                    line.extend_from_slice(&rest[..end]);
                    chunker.push(&line);
                    line.clear();
                    rest = &rest[end + 1..];
                }
                _ => {
                    let room = MAX_LINE_BYTES - line.len();
                    let take = rest.len().min(room);
                    line.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if line.len() >= MAX_LINE_BYTES {
                        let cut = char_boundary(&line);
                        let tail = line.split_off(cut);
                        chunker.push(&line);
                        line = tail;
                    }
                }
            }
        }
        let consumed = chunk.len();
        reader.consume(consumed);
        sink.persist(stream, chunker.take(), read_at, agent.as_mut()).await;
    }
    if !line.is_empty() {
        // A last line without a newline is kept.
        chunker.push(&line);
        sink.persist(stream, chunker.take(), now(), agent.as_mut()).await;
    }
    if let Some(side) = agent.as_mut() {
        let held_back = side.reader.finish();
        if !held_back.is_empty() {
            sink.store_activity(side, held_back, now(), |_, _| Ok(())).await;
        }
    }
}

/// Where to split an over-long line so that a UTF-8 character is not cut in two.
fn char_boundary(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => e.valid_up_to(),
        _ => bytes.len(),
    }
}

/// Sends a signal to a whole process group; a group that is already gone is fine.
pub fn signal_group(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, %signal, error = %e, "signalling a process group failed"),
    }
}

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Kills the process group of an execution that ran before a crash, if its leader is
/// still the process we started (same pid, same start time).
pub fn kill_leftover_group(pid: i32, recorded_ticks: Option<u64>) -> bool {
    match (start_ticks(pid), recorded_ticks) {
        (Some(now_ticks), Some(then_ticks)) if now_ticks == then_ticks => {
            signal_group(pid, Signal::SIGKILL);
            true
        }
        _ => false,
    }
}

/// Kills every process (and its process group) whose environment's `WARDEN_TOKEN` is an
/// agent token with one of `hashes`: what executions of a crashed daemon left behind.
/// Returns how many processes were found.
pub fn kill_leftovers_by_token(hashes: &HashSet<String>) -> usize {
    if hashes.is_empty() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let me = std::process::id() as i32;
    let mut found = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        // Processes of other users cannot be read, and are not ours.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let ours = environ
            .split(|&b| b == 0)
            .filter_map(|var| var.strip_prefix(b"WARDEN_TOKEN="))
            .filter_map(|token| std::str::from_utf8(token).ok())
            .any(|token| hashes.contains(&token_hash(token)));
        if !ours {
            continue;
        }
        found += 1;
        let target = Pid::from_raw(pid);
        match nix::unistd::getpgid(Some(target)) {
            // Never our own group (an execution always has a group of its own).
            Ok(group) if group.as_raw() != nix::unistd::getpgrp().as_raw() => {
                signal_group(group.as_raw(), Signal::SIGKILL)
            }
            _ => {}
        }
        let _ = nix::sys::signal::kill(target, Signal::SIGKILL);
        tracing::debug!(pid, "killed a leftover process");
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_keep_characters_whole() {
        let mut bytes = "é".repeat(10).into_bytes();
        bytes.truncate(7); // cuts the fourth 'é' in half
        assert_eq!(char_boundary(&bytes), 6);
        assert_eq!(char_boundary(b"plain"), 5);
        assert_eq!(char_boundary(&[0xff, 0xfe]), 2);
    }

    #[test]
    fn our_own_start_time_is_readable() {
        let me = std::process::id() as i32;
        assert!(start_ticks(me).is_some());
        assert_eq!(start_ticks(me), start_ticks(me));
        assert_eq!(start_ticks(i32::MAX), None);
    }
}
