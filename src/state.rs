//! State shared by the front door, the admin listener and the poller.

use crate::balance::{policy, Snapshot};
use crate::config::Config;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// The one place castgate's live state is kept: the current snapshot (one
/// `ArcSwap`, written by the poller only) and the metrics.
pub struct State {
    /// The current load table; load it once per request.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Every metric.
    pub metrics: Metrics,
}

impl State {
    /// Start from a config: every edge down (not polled yet) until the
    /// poller's first round.
    ///
    /// # Errors
    /// Only if metrics fail to register (duplicate names).
    pub fn new(config: Config) -> prometheus::Result<Arc<State>> {
        let config = Arc::new(config);
        let policy: Arc<dyn policy::Policy> = Arc::from(policy::from_name(config.policy));
        let first = Snapshot::build(config, policy, &[], 0, None);
        let snapshot = Arc::new(ArcSwap::from_pointee(first));
        let metrics = Metrics::new(snapshot.clone())?;
        Ok(Arc::new(State { snapshot, metrics }))
    }
}
