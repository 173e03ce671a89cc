//! Rise/fall hysteresis: an edge is up after `rise` consecutive good polls
//! and down after `fall` consecutive failed ones.

/// One edge's hysteresis counters. Starts down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hysteresis {
    up: bool,
    good: u32,
    bad: u32,
}

impl Hysteresis {
    /// Whether the edge is up now.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Record one poll's outcome; returns true when up/down changed.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        let was = self.up;
        if ok {
            self.bad = 0;
            self.good = self.good.saturating_add(1);
            if !self.up && self.good >= rise.max(1) {
                self.up = true;
            }
        } else {
            self.good = 0;
            self.bad = self.bad.saturating_add(1);
            if self.up && self.bad >= fall.max(1) {
                self.up = false;
            }
        }
        was != self.up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall() {
        let mut h = Hysteresis::default();
        assert!(!h.is_up());
        assert!(!h.record(true, 2, 3));
        assert!(h.record(true, 2, 3));
        assert!(h.is_up());
        assert!(!h.record(false, 2, 3));
        assert!(!h.record(false, 2, 3));
        // a good poll in between resets the failure count
        assert!(!h.record(true, 2, 3));
        assert!(!h.record(false, 2, 3));
        assert!(!h.record(false, 2, 3));
        assert!(h.record(false, 2, 3));
        assert!(!h.is_up());
        // and a failure resets the success count
        h.record(true, 2, 3);
        h.record(false, 2, 3);
        h.record(true, 2, 3);
        assert!(!h.is_up());
        h.record(true, 2, 3);
        assert!(h.is_up());
    }

    #[test]
    fn rise_one_is_up_at_first_good_poll() {
        let mut h = Hysteresis::default();
        assert!(h.record(true, 1, 1));
        assert!(h.record(false, 1, 1));
    }
}
