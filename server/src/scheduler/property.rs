//! Counts of a job's allocations per value of one node property (`${meta.rack}`),
//! kept up to date as the plan places and stops: what `distinct_property` limits and
//! what `spread` evens out. Min and max come from a histogram, so reading them costs
//! O(log values) however many nodes the cluster has.

use std::collections::BTreeMap;

use super::fxhash::FxHashMap;

/// Allocations per property value.
#[derive(Debug, Clone, Default)]
pub struct PropertyCounts {
    counts: FxHashMap<String, u32>,
    /// count -> how many values have that count.
    histogram: BTreeMap<u32, usize>,
}

impl PropertyCounts {
    pub fn new() -> PropertyCounts {
        PropertyCounts::default()
    }

    /// Makes `value` known with no allocations (for an even spread over the values
    /// seen, an empty rack must count as the emptiest).
    pub fn observe(&mut self, value: &str) {
        if !self.counts.contains_key(value) {
            self.counts.insert(value.to_string(), 0);
            *self.histogram.entry(0).or_default() += 1;
        }
    }

    fn move_bucket(&mut self, from: u32, to: u32) {
        if let Some(n) = self.histogram.get_mut(&from) {
            *n -= 1;
            if *n == 0 {
                self.histogram.remove(&from);
            }
        }
        *self.histogram.entry(to).or_default() += 1;
    }

    /// One more allocation on a node with `value`.
    pub fn add(&mut self, value: &str) {
        self.observe(value);
        let Some(c) = self.counts.get_mut(value) else {
            return;
        };
        let from = *c;
        *c += 1;
        let to = *c;
        self.move_bucket(from, to);
    }

    /// One allocation fewer on a node with `value` (never below zero).
    pub fn remove(&mut self, value: &str) {
        let Some(c) = self.counts.get_mut(value) else {
            return;
        };
        if *c == 0 {
            return;
        }
        let from = *c;
        *c -= 1;
        let to = *c;
        self.move_bucket(from, to);
    }

    pub fn get(&self, value: &str) -> u32 {
        self.counts.get(value).copied().unwrap_or(0)
    }

    /// The fewest allocations any known value has.
    pub fn min(&self) -> Option<u32> {
        self.histogram.keys().next().copied()
    }

    /// The most allocations any known value has.
    pub fn max(&self) -> Option<u32> {
        self.histogram.keys().next_back().copied()
    }

    /// Allocations over every value.
    pub fn total(&self) -> u32 {
        self.counts.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_and_max_follow_adds_and_removes() {
        let mut c = PropertyCounts::new();
        c.observe("r1");
        c.observe("r2");
        c.add("r1");
        c.add("r1");
        assert_eq!((c.min(), c.max()), (Some(0), Some(2)));
        c.add("r2");
        c.remove("r1");
        assert_eq!((c.min(), c.max()), (Some(1), Some(1)));
        assert_eq!(c.get("r1"), 1);
        assert_eq!(c.get("r9"), 0);
        assert_eq!(c.total(), 2);
        c.remove("r9");
        c.remove("r2");
        c.remove("r2");
        assert_eq!(c.get("r2"), 0);
        assert_eq!(c.min(), Some(0));
    }
}
