//! castgate's log output: every line (the access log included) is appended
//! to one in-memory batch and written to stderr by a background thread
//! every [`FLUSH_EVERY`], off the request path, as nginx's `access_log …
//! buffer=… flush=…` does.
//!
//! Why: with a synchronous writer every access-log line was one `write(2)`
//! on the request path, and the access log (on by default) cost a third of
//! the front door's requests per CPU-second. Taking the write off the
//! request path (tracing-appender's non-blocking writer, then this batch)
//! was not enough: formatting the line through tracing-subscriber's fmt
//! layer (a field visitor and `core::fmt` per field, its timestamp type)
//! cost 4.7 µs a request, 25% of a playlist answer's CPU (measured
//! 2026-12-01, same binary with `RUST_LOG=warn`). So the access line is
//! written by [`access`], which formats it in tracing-subscriber's own
//! text and JSON layouts (the same lines as before) into a reused buffer;
//! other log lines still go through tracing.
//!
//! The batch is bounded ([`MAX_BATCH`]): when stderr cannot keep up, new
//! lines are dropped rather than stalling requests, and counted in
//! `castgate_log_lines_dropped_total`. The lines still in the batch when the
//! process exits are written by an `atexit` handler.
//!
//! `castgate run --daemon` writes synchronously instead: pingora forks to
//! detach after the logs are set up, and a writer thread does not survive
//! a fork.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriter};

/// Longest a line waits in the batch before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Largest batch, bytes: about 40,000 access lines (~25 MiB at most in
/// memory while stderr is stalled). A line that finds the batch full is
/// dropped and counted.
pub const MAX_BATCH: usize = 8 << 20;

/// A batch this large is written at once, not at the next tick.
const WRITE_AT: usize = 256 << 10;

/// The layout chosen by [`init`], for [`access`].
static LAYOUT: OnceLock<Format> = OnceLock::new();

/// The one batch of the process.
struct Batch {
    lines: Mutex<Vec<u8>>,
    /// Wakes the writer thread early (a large batch).
    large: Condvar,
    dropped: AtomicU64,
}

static BATCH: OnceLock<Batch> = OnceLock::new();

/// How log lines are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people: one line of text, ANSI colours when stderr is a terminal.
    Text,
    /// For log shippers: one JSON object a line.
    Json,
}

/// Install the global subscriber: `RUST_LOG` filters (default `info`).
/// `background`: lines are batched and written by a writer thread (else
/// each is written at once, for a process about to fork).
pub fn init(format: Format, background: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = LAYOUT.set(format);
    let writer = if background && start_writer() {
        BoxMakeWriter::new(Batched)
    } else {
        BoxMakeWriter::new(std::io::stderr)
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
}

/// Lines dropped because the batch was full, since start (0 before
/// [`init`]).
pub fn dropped_lines() -> u64 {
    BATCH.get().map_or(0, |b| b.dropped.load(Ordering::Relaxed))
}

/// Start the writer thread and the exit handler; false if either cannot be
/// had (then lines are written at once).
fn start_writer() -> bool {
    let batch = BATCH.get_or_init(|| Batch {
        lines: Mutex::new(Vec::with_capacity(64 << 10)),
        large: Condvar::new(),
        dropped: AtomicU64::new(0),
    });
    let spawned = std::thread::Builder::new()
        .name("castgate-log".into())
        .spawn(move || loop {
            let taken = match batch.lines.lock() {
                Ok(guard) => {
                    let (mut guard, _) = match batch.large.wait_timeout(guard, FLUSH_EVERY) {
                        Ok(woken) => woken,
                        Err(_) => return,
                    };
                    std::mem::replace(&mut *guard, Vec::with_capacity(64 << 10))
                }
                Err(_) => return,
            };
            if !taken.is_empty() {
                let _ = std::io::stderr().lock().write_all(&taken);
            }
        });
    if spawned.is_err() {
        return false;
    }
    // SAFETY: registers a plain `extern "C"` function with no arguments,
    // which libc calls from `exit` (pingora ends the process with
    // `std::process::exit`).
    unsafe { libc::atexit(write_rest) };
    true
}

/// Write what is left in the batch (at exit).
extern "C" fn write_rest() {
    if let Some(batch) = BATCH.get() {
        if let Ok(mut lines) = batch.lines.lock() {
            let _ = std::io::stderr().lock().write_all(&lines);
            lines.clear();
        }
    }
}

/// One front-door request, for [`access`].
#[derive(Clone, Copy)]
pub struct AccessLine<'a> {
    /// The client's address (`ip:port`), if known.
    pub client: Option<&'a dyn std::fmt::Display>,
    /// Request method.
    pub method: &'a str,
    /// Request path (no query).
    pub path: &'a str,
    /// Stream name, `-` for none.
    pub stream: &'a str,
    /// `format` metric label.
    pub format: &'a str,
    /// Edge chosen or asked, `-` for none.
    pub edge: &'a str,
    /// HTTP status answered.
    pub code: u16,
    /// Time from the request's start to its end, microseconds.
    pub micros: u64,
    /// A relayed stream resumed on other edges: how many times, and the
    /// silence the listener had across all of them (written as `resumes`
    /// and `gap_ms` only when there was one).
    pub resumes: Option<(u32, std::time::Duration)>,
}

/// Write one access-log line (target `castgate::access`, level INFO, the
/// fields of [`AccessLine`]) in the layout of the rest of the log:
///
/// - text: `2026-12-01T21:05:51.534741Z  INFO castgate::access:
///   client=127.0.0.1:50412 method=GET path=/apple.m3u stream="apple"
///   format="m3u" edge="a" code=200 micros=57` (a relayed stream that
///   resumed on other edges adds `resumes=2 gap_ms=1430`);
/// - JSON: `{"timestamp":…,"level":"INFO","fields":{"client":…,…},
///   "target":"castgate::access"}`.
///
/// Nothing is written when `RUST_LOG` filters the target out.
pub fn access(line: &AccessLine<'_>) {
    use std::fmt::Write as _;
    if !tracing::enabled!(target: "castgate::access", tracing::Level::INFO) {
        return;
    }
    thread_local! {
        static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(256));
    }
    LINE.with(|cell| {
        let Ok(mut out) = cell.try_borrow_mut() else {
            return;
        };
        out.clear();
        let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let json = LAYOUT.get().copied() == Some(Format::Json);
        // Field values in the layout's quoting: text quotes strings the way
        // `{:?}` does, JSON as JSON strings; plain strings take a fast path.
        let quoted = |out: &mut String, v: &str| {
            let plain = v
                .bytes()
                .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f);
            if plain {
                out.push('"');
                out.push_str(v);
                out.push('"');
            } else if json {
                out.push_str(&serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into()));
            } else {
                let _ = write!(out, "{v:?}");
            }
        };
        if json {
            let _ = write!(
                out,
                "{{\"timestamp\":\"{now}\",\"level\":\"INFO\",\"fields\":{{\"client\":\""
            );
            if let Some(c) = line.client {
                let _ = write!(out, "{c}");
            }
            out.push_str("\",\"method\":");
            quoted(&mut out, line.method);
            out.push_str(",\"path\":");
            quoted(&mut out, line.path);
            out.push_str(",\"stream\":");
            quoted(&mut out, line.stream);
            out.push_str(",\"format\":");
            quoted(&mut out, line.format);
            out.push_str(",\"edge\":");
            quoted(&mut out, line.edge);
            let _ = write!(out, ",\"code\":{},\"micros\":{}", line.code, line.micros);
            if let Some((n, gap)) = line.resumes {
                let _ = write!(out, ",\"resumes\":{n},\"gap_ms\":{}", gap.as_millis());
            }
            let _ = writeln!(out, "}},\"target\":\"castgate::access\"}}");
        } else {
            let _ = write!(out, "{now}  INFO castgate::access: client=");
            if let Some(c) = line.client {
                let _ = write!(out, "{c}");
            }
            out.push_str(" method=");
            out.push_str(line.method);
            out.push_str(" path=");
            out.push_str(line.path);
            out.push_str(" stream=");
            quoted(&mut out, line.stream);
            out.push_str(" format=");
            quoted(&mut out, line.format);
            out.push_str(" edge=");
            quoted(&mut out, line.edge);
            let _ = write!(out, " code={} micros={}", line.code, line.micros);
            if let Some((n, gap)) = line.resumes {
                let _ = write!(out, " resumes={n} gap_ms={}", gap.as_millis());
            }
            out.push('\n');
        }
        let _ = Append.write_all(out.as_bytes());
    });
}

/// [`MakeWriter`] for the batch.
struct Batched;

/// Appends one formatted line to the batch.
struct Append;

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Append;

    fn make_writer(&'a self) -> Append {
        Append
    }
}

impl Write for Append {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(batch) = BATCH.get() else {
            return std::io::stderr().write(buf);
        };
        let Ok(mut lines) = batch.lines.lock() else {
            return Ok(buf.len());
        };
        if lines.len() + buf.len() > MAX_BATCH {
            batch.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(buf.len());
        }
        lines.extend_from_slice(buf);
        if lines.len() >= WRITE_AT {
            batch.large.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
