//! HLS session counting: a session is seen each time a player fetches a
//! playlist with its token. Requests only send a small record down a
//! channel (no lock); the poller drains it before building each snapshot
//! and counts sessions seen within the token lifetime.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// One sighting of a session.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// The session id carried by the token.
    pub session: u64,
    /// Stream index in the config.
    pub stream: usize,
    /// Edge index in the config.
    pub edge: usize,
    /// When.
    pub at: Instant,
}

/// The sending half, shared by request threads.
#[derive(Debug, Clone)]
pub struct SessionLog {
    tx: UnboundedSender<Seen>,
}

impl SessionLog {
    /// A log and the table that reads it.
    pub fn new() -> (SessionLog, SessionTable) {
        let (tx, rx) = unbounded_channel();
        (
            SessionLog { tx },
            SessionTable {
                rx,
                live: HashMap::new(),
            },
        )
    }

    /// Record a sighting; never blocks (dropped if the table is gone).
    pub fn seen(&self, seen: Seen) {
        let _ = self.tx.send(seen);
    }
}

/// Sessions seen recently, owned by the poller.
#[derive(Debug)]
pub struct SessionTable {
    rx: UnboundedReceiver<Seen>,
    live: HashMap<u64, Seen>,
}

impl SessionTable {
    /// Take in every pending sighting and forget sessions not seen within
    /// `window`; returns sessions per (stream, edge).
    pub fn count(&mut self, window: Duration, now: Instant) -> HashMap<(usize, usize), u64> {
        while let Ok(seen) = self.rx.try_recv() {
            // A session that moved edges counts on its latest edge only.
            self.live.insert(seen.session, seen);
        }
        self.live
            .retain(|_, s| now.saturating_duration_since(s.at) <= window);
        let mut counts = HashMap::new();
        for s in self.live.values() {
            *counts.entry((s.stream, s.edge)).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_recent_sessions_on_their_latest_edge() {
        let (log, mut table) = SessionLog::new();
        let t0 = Instant::now();
        let seen = |session, edge, at| Seen {
            session,
            stream: 0,
            edge,
            at,
        };
        log.seen(seen(1, 0, t0));
        log.seen(seen(1, 0, t0));
        log.seen(seen(2, 0, t0));
        log.seen(seen(3, 1, t0));
        log.seen(seen(3, 0, t0 + Duration::from_secs(1)));
        let c = table.count(Duration::from_secs(60), t0 + Duration::from_secs(2));
        assert_eq!(c.get(&(0, 0)), Some(&3));
        assert_eq!(c.get(&(0, 1)), None);
        let c = table.count(Duration::from_secs(60), t0 + Duration::from_secs(62));
        assert!(c.is_empty());
    }
}
