//! The control loop: reloads on SIGHUP and on a watch of the config file,
//! and DNS discovery every poll interval.

use crate::control::Control;
use std::sync::Arc;

/// The background service that reloads the config on SIGHUP and, unless
/// `reload.watch` is false, when the file changes (checked every 500 ms by
/// size, modification time and content; a change is read once the file
/// has been stable for `reload.debounce`). Polling the file keeps it
/// simple and works the same on every filesystem, editors' rename-over
/// saves included.
pub struct Reloader {
    control: Arc<Control>,
}

impl Reloader {
    /// A reloader driving `control`.
    pub fn new(control: Arc<Control>) -> Self {
        Reloader { control }
    }
}

/// Size and modification time of a file, `None` when unreadable.
fn stamp(path: &std::path::Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Reloader {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload by file watch or POST /api/reload");
                None
            }
        };
        let path = self.control.path().to_path_buf();
        let mut last = stamp(&path);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        let mut next_discovery = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    tracing::info!("SIGHUP: reloading the config");
                    self.control.reload().await;
                    last = stamp(&path);
                }
                _ = tick.tick() => {
                    let config = self.control.state().snapshot.load().config.clone();
                    if tokio::time::Instant::now() >= next_discovery {
                        next_discovery = tokio::time::Instant::now() + config.poll.interval;
                        self.control.discover().await;
                    }
                    let watch = config.reload.clone();
                    if !watch.watch {
                        continue;
                    }
                    let now = stamp(&path);
                    if now == last || now.is_none() {
                        continue;
                    }
                    // Wait until the writer is done.
                    let mut seen = now;
                    loop {
                        tokio::time::sleep(watch.debounce).await;
                        let again = stamp(&path);
                        if again == seen {
                            break;
                        }
                        seen = again;
                    }
                    last = seen;
                    self.control.reload().await;
                }
            }
        }
    }
}
