//! Which stored events are timed hop by hop: every `SB_HOP_SAMPLE`-th one
//! is published with the time its HTTP request came in
//! (`switchboard_proto::subjects::HOP_HEADER`), from which each gateway
//! times the rest of its way (`/v1/stats/hops`).

use std::sync::atomic::{AtomicU64, Ordering};

pub struct HopSampler {
    /// 0: none.
    every: u64,
    count: AtomicU64,
}

impl HopSampler {
    pub fn new(every: u64) -> Self {
        Self {
            every,
            count: AtomicU64::new(0),
        }
    }

    /// `http_in_ns` for the events to mark, `None` for the others.
    pub fn mark(&self, http_in_ns: u64) -> Option<u64> {
        if self.every == 0 {
            return None;
        }
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        n.is_multiple_of(self.every).then_some(http_in_ns)
    }
}

/// Now, in Unix nanoseconds.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nth_event_is_marked_and_zero_marks_none() {
        let s = HopSampler::new(3);
        let marked: Vec<bool> = (0..7).map(|_| s.mark(9).is_some()).collect();
        assert_eq!(marked, [true, false, false, true, false, false, true]);
        assert_eq!(HopSampler::new(0).mark(9), None);
    }
}
