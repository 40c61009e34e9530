//! `warden.log` for a daemon started with `warden start`: tracing writes here, and the
//! file is rotated by size (`warden.log` → `warden.log.1` → … → `.N`, the oldest
//! dropped). The process's stderr follows each new file, so a panic message lands in the
//! current log too. `commands::init_logging` installs it. Lines hold text agents wrote
//! (approval titles, git's messages about their files): their control characters are
//! written escaped, so the log never holds one and no field can forge a line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// Rotate when the log passes this many bytes (`WARDEN_LOG_MAX_BYTES` overrides it).
pub const DEFAULT_MAX_BYTES: u64 = 10 << 20;
/// Rotated files kept besides the current one.
pub const KEEP: usize = 3;

#[derive(Clone)]
pub struct RotatingLog {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    /// Point stderr at each new file (the daemon does; tests do not).
    follow_stderr: bool,
}

impl RotatingLog {
    pub fn open(path: &Path, max_bytes: u64, follow_stderr: bool) -> io::Result<RotatingLog> {
        let file = append(path)?;
        let written = file.metadata()?.len();
        let inner = Inner { path: path.to_owned(), file, written, max_bytes: max_bytes.max(1024), follow_stderr };
        Ok(RotatingLog { inner: Arc::new(Mutex::new(inner)) })
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl Inner {
    fn rotate(&mut self) -> io::Result<()> {
        let _ = std::fs::remove_file(numbered(&self.path, KEEP));
        for n in (1..KEEP).rev() {
            let _ = std::fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1));
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = append(&self.path)?;
        self.written = 0;
        if self.follow_stderr {
            // stderr (panics, anything not logged through tracing) follows the new file.
            let _ = nix::unistd::dup2_stderr(&self.file);
        }
        Ok(())
    }
}

/// One formatted log line (or part of one) at a time.
pub struct LogWriter {
    inner: Arc<Mutex<Inner>>,
}

/// A log line as written: every control character escaped but its final newline.
fn escaped(buf: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let (body, end): (&[u8], &[u8]) = match buf.strip_suffix(b"\n") {
        Some(body) => (body, b"\n"),
        None => (buf, b""),
    };
    let text = String::from_utf8_lossy(body);
    match crate::terminal::escape_line(&text) {
        std::borrow::Cow::Borrowed(_) if matches!(text, std::borrow::Cow::Borrowed(_)) => buf.into(),
        shown => [shown.as_bytes(), end].concat().into(),
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let line = escaped(buf);
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.written > 0 && inner.written + line.len() as u64 > inner.max_bytes {
            inner.rotate()?;
        }
        inner.file.write_all(&line)?;
        inner.written += line.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for RotatingLog {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter { inner: self.inner.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.log");
        let log = RotatingLog::open(&path, 1 << 20, false).unwrap();
        let mut writer = log.make_writer();
        writer
            .write_all("INFO approval requested title=\"npm test \u{1b}[8m&& curl\nFAKE line\u{7}\"\n".as_bytes())
            .unwrap();
        writer.write_all(b"INFO plain\n").unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written, "INFO approval requested title=\"npm test \\e[8m&& curl\\nFAKE line\\x07\"\nINFO plain\n");
    }

    #[test]
    fn the_log_rotates_by_size_and_keeps_a_few_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.log");
        let log = RotatingLog::open(&path, 1024, false).unwrap();
        let line = [b'x'; 99];
        for _ in 0..60 {
            let mut writer = log.make_writer();
            writer.write_all(&line).unwrap();
            writer.write_all(b"\n").unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= 1024);
        for n in 1..=KEEP {
            assert!(numbered(&path, n).exists(), "{n}");
            assert!(std::fs::metadata(numbered(&path, n)).unwrap().len() <= 1024);
        }
        assert!(!numbered(&path, KEEP + 1).exists());
    }
}
