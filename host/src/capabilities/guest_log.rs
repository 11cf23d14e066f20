//! `log`, and the guest's stdout/stderr: both land in the tenant's log,
//! tagged with the pipeline and its version.

use super::bindings::Level;
use super::bindings::batch::mysimbdp::pipeline::log;
use super::{HostState, MAX_DENIALS_LOGGED};
use crate::failure::capped;
use crate::telemetry::events;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Lines one invocation may write to the tenant's log (log calls and the
/// lines it prints); the rest are counted, not written.
pub const MAX_LOG_LINES: u32 = 10_000;
/// Bytes one invocation may write to the tenant's log, in the same budget.
pub const MAX_LOG_BYTES: u64 = 1024 * 1024;
/// Longest line kept, marker included; longer ones are cut.
pub const MAX_LINE_BYTES: usize = 4 * 1024;
/// Bytes of stdout or stderr kept per invocation.
const MAX_OUTPUT_BYTES: usize = 256 * 1024;

impl log::Host for HostState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.write_guest_line(level, "guest", &message);
        Ok(())
    }
}

impl HostState {
    /// Writes one line of the guest, cut to [`MAX_LINE_BYTES`], if the
    /// invocation's budget of lines and bytes has room; counts it otherwise.
    fn write_guest_line(&mut self, level: &str, source: &str, message: &str) {
        let message = capped(message, MAX_LINE_BYTES);
        let effects = &mut self.effects;
        if effects.log_lines >= MAX_LOG_LINES || effects.log_bytes + message.len() as u64 > MAX_LOG_BYTES {
            effects.log_lines_dropped = effects.log_lines_dropped.saturating_add(1);
            return;
        }
        effects.log_lines += 1;
        effects.log_bytes += message.len() as u64;
        self.write_host_line(level, source, &message);
    }

    fn write_host_line(&self, level: &str, source: &str, message: &str) {
        events::GuestLine { by: self.scope.invocation(), level, source, message }.emit(&self.scope.guest_log);
    }

    /// Moves what the guest printed into the tenant's log; returns stderr,
    /// which holds the message of a panic.
    pub(crate) fn flush_output(&mut self) -> String {
        for (source, capture) in [("stdout", self.stdout.clone()), ("stderr", self.stderr.clone())] {
            let (text, truncated) = capture.take();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                self.write_guest_line("info", source, line);
            }
            if truncated {
                self.write_host_line("warn", source, &format!("output beyond {MAX_OUTPUT_BYTES} bytes was not kept"));
            }
        }
        if self.effects.log_lines_dropped > 0 {
            let dropped = self.effects.log_lines_dropped;
            self.write_host_line(
                "warn",
                "host",
                &format!("{dropped} log lines beyond the invocation's budget ({MAX_LOG_LINES} lines, {MAX_LOG_BYTES} bytes) were not kept"),
            );
        }
        if self.effects.denied > MAX_DENIALS_LOGGED {
            let more = self.effects.denied - MAX_DENIALS_LOGGED;
            self.write_host_line(
                "warn",
                "host",
                &format!("{more} more refused calls beyond the first {MAX_DENIALS_LOGGED} were not logged"),
            );
        }
        self.stderr.last_text()
    }
}

/// A capped in-memory stdout/stderr for the guest.
#[derive(Clone, Default)]
pub struct OutputCapture {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
    /// Kept after `take`, for failure messages.
    last: String,
}

impl OutputCapture {
    fn take(&self) -> (String, bool) {
        let mut inner = self.inner.lock().expect("capture poisoned");
        let text = String::from_utf8_lossy(&std::mem::take(&mut inner.bytes)).into_owned();
        inner.last = text.clone();
        (text, std::mem::take(&mut inner.truncated))
    }

    fn last_text(&self) -> String {
        self.inner.lock().expect("capture poisoned").last.clone()
    }
}

impl wasmtime_wasi::cli::IsTerminal for OutputCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for OutputCapture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for OutputCapture {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut inner = self.inner.lock().expect("capture poisoned");
        let room = MAX_OUTPUT_BYTES.saturating_sub(inner.bytes.len());
        if buf.len() > room {
            inner.truncated = true;
        }
        inner.bytes.extend_from_slice(&buf[..buf.len().min(room)]);
        // Report everything as written: a chatty guest must not trap on a full buffer.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
