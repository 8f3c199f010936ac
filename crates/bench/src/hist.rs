//! A log-linear latency histogram in microseconds: exact below 128 µs, then
//! 64 buckets per power of two (under 1.6 % error), mergeable across worker
//! processes. Written here rather than taken from `hdrhistogram` because the
//! bench needs only record, merge, quantile and a compact wire form.

use serde::{Deserialize, Serialize};

const EXACT: u64 = 128;
const PER_OCTAVE: usize = 64;
const BUCKETS: usize = EXACT as usize + 57 * PER_OCTAVE;

#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros() as usize;
    let shift = msb - 6;
    let top = (v >> shift) as usize;
    EXACT as usize + (shift - 1) * PER_OCTAVE + (top - PER_OCTAVE)
}

/// The middle of bucket `i`.
fn value_of(i: usize) -> u64 {
    if i < EXACT as usize {
        return i as u64;
    }
    let j = i - EXACT as usize;
    let shift = j / PER_OCTAVE + 1;
    let low = ((j % PER_OCTAVE + PER_OCTAVE) as u64) << shift;
    low + (1u64 << shift) / 2
}

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        self.counts[index(micros)] += 1;
        self.total += 1;
        self.max = self.max.max(micros);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1), in microseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value_of(i).min(self.max);
            }
        }
        self.max
    }

    /// p50/p99/p999/max in milliseconds, for reports.
    pub fn summary_ms(&self) -> serde_json::Value {
        let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
        serde_json::json!({
            "count": self.total,
            "p50_ms": ms(self.quantile(0.50)),
            "p99_ms": ms(self.quantile(0.99)),
            "p999_ms": ms(self.quantile(0.999)),
            "max_ms": ms(self.max),
        })
    }
}

/// The wire form: only non-empty buckets.
#[derive(Serialize, Deserialize)]
struct Sparse {
    buckets: Vec<(u32, u64)>,
    max: u64,
}

impl Serialize for Histogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Sparse {
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| (i as u32, *c))
                .collect(),
            max: self.max,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Histogram {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let sparse = Sparse::deserialize(d)?;
        let mut h = Histogram::default();
        for (i, c) in sparse.buckets {
            let slot = h
                .counts
                .get_mut(i as usize)
                .ok_or_else(|| serde::de::Error::custom("histogram bucket out of range"))?;
            *slot += c;
            h.total += c;
        }
        h.max = sparse.max;
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut last = 0;
        for v in [0u64, 1, 127, 128, 129, 255, 256, 1_000, 65_535, 1 << 40] {
            let i = index(v);
            assert!(i >= last, "index must not decrease at {v}");
            last = i;
            let mid = value_of(i) as f64;
            assert!(
                (mid - v as f64).abs() <= v as f64 * 0.016 + 0.5,
                "{v} -> {mid}"
            );
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_survive_the_wire() {
        let mut h = Histogram::default();
        for v in 1..=1000 {
            h.record(v * 10);
        }
        let back: Histogram = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back.total, 1000);
        let p50 = back.quantile(0.5) as f64;
        assert!((p50 - 5000.0).abs() < 100.0, "p50 {p50}");
        assert_eq!(back.quantile(1.0), 10_000);
    }
}
