//! HLS session counting: a session is seen each time a player fetches a
//! playlist with its token. Requests only send a small record down a
//! channel (no lock); the poller drains it before building each snapshot
//! and counts sessions seen within the token lifetime.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// One sighting of a session. Names, not indexes: a reload may reorder
/// the config between the sighting and the count.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The session id carried by the token.
    pub session: u64,
    /// Stream name.
    pub stream: Arc<str>,
    /// Edge name.
    pub edge: Arc<str>,
    /// When.
    pub at: Instant,
}

/// Sessions per (stream name, edge name).
pub type SessionCounts = HashMap<(Arc<str>, Arc<str>), u64>;

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
    pub fn count(&mut self, window: Duration, now: Instant) -> SessionCounts {
        while let Ok(seen) = self.rx.try_recv() {
            // A session that moved edges counts on its latest edge only.
            self.live.insert(seen.session, seen);
        }
        self.live
            .retain(|_, s| now.saturating_duration_since(s.at) <= window);
        let mut counts = HashMap::new();
        for s in self.live.values() {
            *counts
                .entry((s.stream.clone(), s.edge.clone()))
                .or_default() += 1;
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
        let (live, e0, e1): (Arc<str>, Arc<str>, Arc<str>) =
            ("live".into(), "e0".into(), "e1".into());
        let seen = |session, edge: &Arc<str>, at| Seen {
            session,
            stream: live.clone(),
            edge: edge.clone(),
            at,
        };
        log.seen(seen(1, &e0, t0));
        log.seen(seen(1, &e0, t0));
        log.seen(seen(2, &e0, t0));
        log.seen(seen(3, &e1, t0));
        log.seen(seen(3, &e0, t0 + Duration::from_secs(1)));
        let c = table.count(Duration::from_secs(60), t0 + Duration::from_secs(2));
        assert_eq!(c.get(&(live.clone(), e0.clone())), Some(&3));
        assert_eq!(c.get(&(live.clone(), e1.clone())), None);
        let c = table.count(Duration::from_secs(60), t0 + Duration::from_secs(62));
        assert!(c.is_empty());
    }
}
