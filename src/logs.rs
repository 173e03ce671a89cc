//! castgate's log output: every line (the access log included) is written
//! to stderr by one background thread, in batches, off the request path.
//!
//! Why: with a synchronous writer every access-log line was one `write(2)`
//! on the request path, and the access log (on by default) cost a third of
//! the front door's requests per CPU-second (README "Performance"). Here a
//! request only formats its line and queues it (tracing-appender's
//! non-blocking writer, as nginx's `access_log … buffer=` batches); the
//! thread drains the queue into a [`BufWriter`] and flushes once per batch.
//!
//! The queue is bounded ([`QUEUE_LINES`]): when stderr cannot keep up, new
//! lines are dropped rather than stalling requests, and counted in
//! `castgate_log_lines_dropped_total`.
//!
//! `castgate run --daemon` writes synchronously instead: pingora forks to
//! detach after the logs are set up, and a writer thread does not survive
//! a fork.

use std::io::BufWriter;
use std::sync::OnceLock;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Lines that may wait for the writer thread. A line is ~200 bytes, so the
/// queue holds at most ~25 MiB; at 100,000 requests a second it covers a
/// stderr stall of over a second.
pub const QUEUE_LINES: usize = 128 * 1024;

/// Bytes gathered before a write to stderr (also written at each batch's
/// end).
const WRITE_BUFFER: usize = 64 * 1024;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// How log lines are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people: one line of text, ANSI colours when stderr is a terminal.
    Text,
    /// For log shippers: one JSON object a line.
    Json,
}

/// Install the global subscriber: `RUST_LOG` filters (default `info`).
/// `background`: lines go through the writer thread (else each is written
/// at once, for a process about to fork). Keep the returned guard for the
/// life of the process: dropping it flushes and stops the writer thread.
pub fn init(format: Format, background: bool) -> Option<WorkerGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = if background {
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(QUEUE_LINES)
            .thread_name("castgate-log")
            .finish(BufWriter::with_capacity(WRITE_BUFFER, std::io::stderr()));
        let _ = DROPPED.set(writer.error_counter());
        (BoxMakeWriter::new(writer), Some(guard))
    } else {
        (BoxMakeWriter::new(std::io::stderr), None)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        Format::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        Format::Json => builder.json().init(),
    }
    guard
}

/// Lines dropped because the queue was full, since start (0 before
/// [`init`]).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}
