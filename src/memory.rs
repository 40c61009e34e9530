//! Gives memory the daemon has freed back to the operating system. glibc keeps freed
//! memory in its arenas for reuse, so after a burst (hundreds of clients connecting and
//! leaving, a flood of output) the RSS stays at its peak although the heap is back to
//! its size before. The Supervisor calls [`release_freed`] every [`RELEASE_INTERVAL`].

use std::time::Duration;

/// How often freed memory is handed back.
pub const RELEASE_INTERVAL: Duration = Duration::from_secs(10);

/// `malloc_trim(0)`: returns the free pages of every arena (a few milliseconds; run it
/// off the actor threads). Nothing to do with other allocators.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
