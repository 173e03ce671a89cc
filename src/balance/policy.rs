//! Selection policies: given the eligible edges of one request, pick one.

use crate::config::PolicyName;
use rand::Rng;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One eligible edge as a policy sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Index of the edge in [`super::Snapshot::edges`].
    pub edge: usize,
    /// (listeners + assigned since the last poll) / capacity / weight;
    /// 0 is idle, 1 is the edge's share of a full farm.
    pub load: f64,
    /// Capacity share, > 0.
    pub weight: f64,
}

/// Picks one of a non-empty list of candidates. Implementations must not
/// panic on any non-empty input, and are shared by every request thread.
pub trait Policy: Send + Sync + std::fmt::Debug {
    /// Index into `candidates` of the chosen one; `candidates` is not empty.
    fn pick(&self, candidates: &[Candidate]) -> usize;
}

/// Build the policy named in the config.
pub fn from_name(name: PolicyName) -> Box<dyn Policy> {
    match name {
        PolicyName::LeastLoaded => Box::new(LeastLoaded),
        PolicyName::RoundRobin => Box::new(RoundRobin::default()),
        PolicyName::Random => Box::new(WeightedRandom),
    }
}

/// Lowest load wins; equal loads are broken at random, so that a burst
/// between two polls does not all go to the first edge in file order.
#[derive(Debug, Default)]
pub struct LeastLoaded;

impl Policy for LeastLoaded {
    fn pick(&self, candidates: &[Candidate]) -> usize {
        let min = candidates
            .iter()
            .map(|c| c.load)
            .fold(f64::INFINITY, f64::min);
        // Loads within a hair of the minimum count as ties.
        let tie = |c: &Candidate| c.load - min <= 1e-9;
        let ties = candidates.iter().filter(|c| tie(c)).count();
        if ties <= 1 {
            return candidates.iter().position(tie).unwrap_or(0);
        }
        let nth = rand::thread_rng().gen_range(0..ties);
        candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| tie(c))
            .nth(nth)
            .map(|(i, _)| i)
            .unwrap_or(0)
    }
}

/// Each candidate in turn; weight is ignored. The counter is shared by all
/// streams, so with several streams each sees a fair but not strict turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Policy for RoundRobin {
    fn pick(&self, candidates: &[Candidate]) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % candidates.len().max(1)
    }
}

/// A random candidate, with probability proportional to its weight.
#[derive(Debug, Default)]
pub struct WeightedRandom;

impl Policy for WeightedRandom {
    fn pick(&self, candidates: &[Candidate]) -> usize {
        let total: f64 = candidates.iter().map(|c| c.weight).sum();
        if !(total.is_finite() && total > 0.0) {
            return 0;
        }
        let mut point = rand::thread_rng().gen_range(0.0..total);
        for (i, c) in candidates.iter().enumerate() {
            if point < c.weight {
                return i;
            }
            point -= c.weight;
        }
        candidates.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(edge: usize, load: f64, weight: f64) -> Candidate {
        Candidate { edge, load, weight }
    }

    #[test]
    fn least_loaded_takes_the_minimum() {
        let p = LeastLoaded;
        assert_eq!(p.pick(&[c(0, 0.5, 1.0), c(1, 0.1, 1.0), c(2, 0.3, 1.0)]), 1);
        assert_eq!(p.pick(&[c(0, 0.0, 1.0)]), 0);
    }

    #[test]
    fn least_loaded_breaks_ties_at_random() {
        let p = LeastLoaded;
        let cands = [c(0, 0.2, 1.0), c(1, 0.2, 1.0), c(2, 0.9, 1.0)];
        let mut seen = [0; 3];
        for _ in 0..400 {
            seen[p.pick(&cands)] += 1;
        }
        assert_eq!(seen[2], 0);
        assert!(seen[0] > 100 && seen[1] > 100, "{seen:?}");
    }

    #[test]
    fn round_robin_cycles() {
        let p = RoundRobin::default();
        let cands = [c(0, 0.9, 1.0), c(1, 0.0, 1.0), c(2, 0.5, 1.0)];
        let picks: Vec<usize> = (0..6).map(|_| p.pick(&cands)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn random_follows_weight() {
        let p = WeightedRandom;
        let cands = [c(0, 0.0, 1.0), c(1, 0.0, 3.0)];
        let mut seen = [0; 2];
        for _ in 0..4000 {
            seen[p.pick(&cands)] += 1;
        }
        let share = seen[1] as f64 / 4000.0;
        assert!((0.70..0.80).contains(&share), "{seen:?}");
    }

    proptest::proptest! {
        #[test]
        fn policies_never_panic_and_stay_in_range(
            loads in proptest::collection::vec((0.0f64..1e6, 0.001f64..1e3), 1..50)
        ) {
            let cands: Vec<Candidate> =
                loads.iter().enumerate().map(|(i, (l, w))| c(i, *l, *w)).collect();
            for p in [from_name(PolicyName::LeastLoaded), from_name(PolicyName::RoundRobin), from_name(PolicyName::Random)] {
                proptest::prop_assert!(p.pick(&cands) < cands.len());
            }
        }
    }
}
