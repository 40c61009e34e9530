//! Noticing that a client hung up while its request waits (a long poll, an event
//! stream). actix-web finds out only when it next writes to the connection, so each
//! connection's socket is remembered when it is accepted ([`ConnectionFd`], set by
//! `daemon`) and [`hung_up`] watches a duplicate of it for the peer's close: what
//! waits for that client is released at once, not at its deadline or next keep-alive.

use std::future::Future;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use actix_web::HttpRequest;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The socket of an accepted connection (its number; the connection owns it).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionFd(pub RawFd);

impl ConnectionFd {
    /// Remembers the socket of a connection being accepted (`HttpServer::on_connect`).
    pub fn remember(connection: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
        if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            data.insert(ConnectionFd(stream.as_raw_fd()));
        }
    }
}

/// Resolves once the client of `req` has closed its side of the connection; never, when
/// that cannot be told (a connection warden did not accept, an fd that cannot be watched).
pub fn hung_up(req: &HttpRequest) -> impl Future<Output = ()> + 'static {
    // Duplicated now, while the request holds the connection open: the watch owns its
    // own descriptor and never touches a number the connection may have let go of.
    let watched = req.conn_data::<ConnectionFd>().and_then(|fd| {
        // SAFETY: the connection's socket is open for as long as its request is handled.
        let socket = unsafe { BorrowedFd::borrow_raw(fd.0) };
        let owned: OwnedFd = socket.try_clone_to_owned().ok()?;
        // SAFETY: the `OwnedFd` stays open, on the same file description, for as long as
        // the `AsyncFd` that owns it.
        unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }.ok()
    });
    async move {
        let Some(watched) = watched else { return std::future::pending().await };
        loop {
            let Ok(mut ready) = watched.readable().await else { return std::future::pending().await };
            if ready.ready().is_read_closed() {
                return;
            }
            // Bytes of a next request, not a close: wait for what comes next.
            ready.clear_ready();
        }
    }
}
