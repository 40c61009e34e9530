//! `Daemon`: one running warden. `Daemon::build(config)` takes the PID lock, opens the
//! store, launches the actors, binds the listener and starts the HTTP server;
//! `run_until_stopped` serves until a [`DaemonHandle::shutdown`]. `warden serve` and the
//! integration tests both start warden through here; [`launch`] starts the actors.

mod launch;

use std::net::{IpAddr, SocketAddr, TcpListener};

use actix::Addr;
use actix_web::dev::{Server, ServerHandle};
use actix_web::HttpServer;
use anyhow::Context;

use crate::actors::execution_monitor::MonitorSettings;
use crate::actors::supervisor::{DaemonInfo, Shutdown, Supervisor};
use crate::config::Config;
use crate::credentials::AgentTokens;
use crate::domain::now;
use crate::home::{Home, PidLock, ServerInfo};
use crate::http::{self, auth::Access, events::LiveSettings, HttpState};
use crate::sandbox::Sandboxer;
use crate::store::Store;
pub use launch::Actors;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A built, listening daemon.
pub struct Daemon {
    /// The address actually bound (the asked-for port may have been busy).
    pub addr: SocketAddr,
    /// `http://host:port`.
    pub url: String,
    /// The API token.
    pub token: String,
    home: Home,
    server: Server,
    supervisor: Addr<Supervisor>,
    pid_lock: PidLock,
}

/// Stops a daemon from elsewhere (a signal handler, a test).
#[derive(Clone)]
pub struct DaemonHandle {
    supervisor: Addr<Supervisor>,
    server: ServerHandle,
}

impl DaemonHandle {
    /// Graceful stop: the Supervisor settles the actors and flushes the store, then the
    /// HTTP server stops, and `run_until_stopped` returns.
    pub async fn shutdown(&self) {
        if let Err(e) = self.supervisor.send(Shutdown).await {
            tracing::error!(error = %e, "supervisor did not answer the shutdown");
        }
        self.server.stop(true).await;
    }
}

impl Daemon {
    /// Builds a daemon inside the current actix system.
    pub async fn build(config: Config) -> anyhow::Result<Daemon> {
        let home = config.home.clone();
        catch_file_size_signal();
        report_bus_errors();
        home.ensure()?;
        let pid_lock = home.lock_pid()?;
        let token = home.load_or_create_token()?;
        let db = home.db_path();
        let store = Store::open(&db).map_err(|e| match crate::store::unusable_companion(&db) {
            Some(file) => anyhow::anyhow!(
                "cannot use the database {}: its file {} cannot be written ({e}); with no warden running, remove \
                 that file and start again (SQLite makes it anew)",
                db.display(),
                file.display()
            ),
            None => anyhow::Error::new(e).context(format!(
                "cannot use the database {}: if another program holds it, stop that program; if it is damaged, move it aside and start again",
                db.display()
            )),
        })?;

        let listener = bind(config.host, config.port)?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let url = format!("http://{addr}");
        let started_at = now();
        let info = DaemonInfo {
            version: VERSION,
            pid: std::process::id(),
            started_at,
            data_dir: home.dir().to_path_buf(),
            url: url.clone(),
        };
        let agent_tokens = AgentTokens::default();
        let sandboxer = Sandboxer::new(home.dir())
            .with_context(|| format!("resolving the data dir {} for the sandbox", home.dir().display()))?;
        let settings = MonitorSettings {
            url: url.clone(),
            agent_tokens: agent_tokens.clone(),
            sandboxer,
            kill_grace: config.kill_grace,
            shutdown_grace: config.shutdown_grace,
        };
        let actors: Actors =
            launch::start_actors(&config, store.clone(), info, settings).await.context("starting the actors")?;

        let state = HttpState {
            actors: actors.clone(),
            access: Access::new(token.clone(), agent_tokens, addr.ip(), addr.port()),
            cors_origins: config.cors_origins.clone(),
            live: LiveSettings { store: store.clone(), heartbeat: config.heartbeat, limits: config.flow_limits },
            in_flight: Default::default(),
        };
        let user_timeout = config.heartbeat.client_timeout;
        let server = HttpServer::new(move || http::app(&state))
            .on_connect(move |connection, data| {
                tune_socket(connection, user_timeout);
                http::hangup::ConnectionFd::remember(connection, data);
            })
            // Events are small frames written one after another: without this, Nagle's
            // algorithm holds each behind the client's delayed ACK of the one before.
            .tcp_nodelay(true)
            .listen(listener)
            .context("listening")?
            .workers(config.workers)
            .disable_signals()
            .shutdown_timeout(2)
            .run();

        home.write_server_info(&ServerInfo {
            pid: std::process::id(),
            host: addr.ip().to_string(),
            port: addr.port(),
            url: url.clone(),
            started_at,
            version: VERSION.into(),
        })?;
        tracing::info!(%url, home = %home.dir().display(), version = VERSION, "warden is listening");
        Ok(Daemon { addr, url, token, home, server, supervisor: actors.supervisor, pid_lock })
    }

    pub fn handle(&self) -> DaemonHandle {
        DaemonHandle { supervisor: self.supervisor.clone(), server: self.server.handle() }
    }

    /// Serves until shut down, then removes `server.json` and the PID file.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Daemon { home, server, pid_lock, .. } = self;
        let result = server.await.context("running the HTTP server");
        home.remove_server_info();
        drop(pid_lock);
        tracing::info!("warden stopped");
        result
    }
}

/// A memory-mapped file that cannot be read or written any more (the database's `-shm`
/// truncated or on a disk with no room behind it) raises SIGBUS, which would end the
/// daemon with no word. The handler says what it was, on stderr (the log under `warden
/// start`), then lets the signal end the process as it would have.
fn report_bus_errors() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    extern "C" fn report(signal: nix::libc::c_int) {
        const SAID: &[u8] = b"warden: SIGBUS: a memory-mapped file could not be read or written (most likely the \
database's -shm file was truncated, or its disk has no room); warden stops. Start it again with `warden start`.\n";
        // SAFETY: write(2), signal(2) and raise(3) are async-signal-safe.
        unsafe {
            nix::libc::write(2, SAID.as_ptr().cast(), SAID.len());
            nix::libc::signal(signal, nix::libc::SIG_DFL);
            nix::libc::raise(signal);
        }
    }
    let action = SigAction::new(SigHandler::Handler(report), SaFlags::SA_RESETHAND, SigSet::empty());
    // SAFETY: the handler only calls async-signal-safe functions.
    if let Err(e) = unsafe { sigaction(Signal::SIGBUS, &action) } {
        tracing::warn!(error = %e, "cannot report SIGBUS");
    }
}

/// A file that may not grow (a full quota, `RLIMIT_FSIZE`) must fail the write with
/// `EFBIG`, which the store reports, rather than kill the daemon with SIGXFSZ. The signal
/// is caught by a handler that does nothing rather than ignored: `exec` resets a caught
/// signal to its default, so agents get the usual behaviour without any code between
/// fork and exec, which lets the standard library spawn them with `posix_spawn` (a fork
/// copies the daemon's page tables: it cost half of B1's throughput).
fn catch_file_size_signal() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    extern "C" fn nothing(_: nix::libc::c_int) {}
    let action = SigAction::new(SigHandler::Handler(nothing), SaFlags::SA_RESTART, SigSet::empty());
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    if let Err(e) = unsafe { sigaction(Signal::SIGXFSZ, &action) } {
        tracing::warn!(error = %e, "cannot catch SIGXFSZ");
    }
}

/// Accepted sockets get a small send buffer, so that what warden counts as queued for a
/// client is most of what is really waiting, and `TCP_USER_TIMEOUT`, so a client that
/// stops reading entirely is dropped by the kernel (no timer in the process can unstick
/// a blocked write).
fn tune_socket(connection: &dyn std::any::Any, user_timeout: std::time::Duration) {
    use nix::sys::socket::{setsockopt, sockopt};
    let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else { return };
    let millis = user_timeout.as_millis().min(u32::MAX as u128) as u32;
    if let Err(e) = setsockopt(stream, sockopt::TcpUserTimeout, &millis) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
    if let Err(e) = setsockopt(stream, sockopt::SndBuf, &SEND_BUFFER) {
        tracing::debug!(error = %e, "cannot set SO_SNDBUF");
    }
}

/// The send buffer asked for (Linux doubles it).
const SEND_BUFFER: usize = 64 * 1024;

/// Binds the asked-for address; a busy port falls back to a free one (said in the log,
/// recorded in `server.json`).
fn bind(host: IpAddr, port: u16) -> anyhow::Result<TcpListener> {
    match TcpListener::bind((host, port)) {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && port != 0 => {
            let listener = TcpListener::bind((host, 0)).with_context(|| format!("binding {host}:0"))?;
            let actual = listener.local_addr().map(|a| a.port()).unwrap_or(0);
            tracing::warn!(asked = port, actual, "port {port} is busy; listening on port {actual} instead");
            Ok(listener)
        }
        Err(e) => Err(e).with_context(|| format!("binding {host}:{port}")),
    }
}
