//! State shared by the front door, the admin listener and the poller.

use crate::balance::sessions::{SessionLog, SessionTable};
use crate::balance::sticky::Sticky;
use crate::balance::{policy, Snapshot};
use crate::config::Config;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// The one place castgate's live state is kept: the current snapshot (one
/// `ArcSwap`, written by the poller only), the token signer, the session
/// log and the metrics.
pub struct State {
    /// The current load table; load it once per request.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Signs and checks HLS session tokens.
    pub sticky: Sticky,
    /// Where requests record HLS session sightings.
    pub sessions: SessionLog,
    /// Every metric.
    pub metrics: Metrics,
    /// The proxied streams castgate relays now, by edge (evacuations).
    pub carrying: Arc<crate::front::relay::Carrying>,
    /// What rewrite-mode HLS sessions were last answered (moves that keep
    /// the media sequence).
    pub answered: crate::front::hls::Answered,
    /// Serialises snapshot writers (the poller, reloads, the admin API);
    /// readers never take it.
    pub writer: tokio::sync::Mutex<()>,
}

impl State {
    /// Publish a new config at once: edges keep their health and counts
    /// where name and poll URL are unchanged (see
    /// [`Snapshot::reconfigure`]); the selection policy keeps its state
    /// unless it changed.
    pub async fn publish_config(&self, config: Config) {
        let _writer = self.writer.lock().await;
        let current = self.snapshot.load_full();
        let policy = if current.config.policy == config.policy {
            current.policy.clone()
        } else {
            Arc::from(policy::from_name(config.policy))
        };
        let next = Snapshot::reconfigure(Arc::new(config), policy, &current);
        self.snapshot.store(Arc::new(next));
    }

    /// Start from a config: every edge down (not polled yet) until the
    /// poller's first round. Returns the state and the session table the
    /// poller reads.
    ///
    /// # Errors
    /// Only if metrics fail to register (duplicate names).
    pub fn new(config: Config) -> prometheus::Result<(Arc<State>, SessionTable)> {
        let sticky = if config.sticky.secrets.is_empty() {
            Sticky::random(config.sticky.ttl)
        } else {
            Sticky::with_secrets(&config.sticky.secrets, config.sticky.ttl)
        };
        let config = Arc::new(config);
        let policy: Arc<dyn policy::Policy> = Arc::from(policy::from_name(config.policy));
        let first = Snapshot::build(config, policy, &Default::default(), 0, None);
        let snapshot = Arc::new(ArcSwap::from_pointee(first));
        let metrics = Metrics::new(snapshot.clone())?;
        let (sessions, table) = SessionLog::new();
        Ok((
            Arc::new(State {
                snapshot,
                sticky,
                sessions,
                metrics,
                carrying: Arc::default(),
                answered: Default::default(),
                writer: tokio::sync::Mutex::new(()),
            }),
            table,
        ))
    }
}
