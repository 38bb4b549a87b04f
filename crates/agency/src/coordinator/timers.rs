//! The loop's timers: retries and deadlines in one queue, ordered by when they are due. One
//! sleep waits for the earliest; when it fires, everything due by then is taken at once, so
//! retries due together are carried out together.

use std::collections::BTreeMap;
use tokio::time::Instant;

/// Values due at instants; several may share one.
#[derive(Debug)]
pub(super) struct Timers<T> {
    due: BTreeMap<Instant, Vec<T>>,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Self {
            due: BTreeMap::new(),
        }
    }
}

impl<T> Timers<T> {
    /// `value` comes due at `at`.
    pub(super) fn insert(&mut self, at: Instant, value: T) {
        self.due.entry(at).or_default().push(value);
    }

    /// When the earliest value comes due; `None` when there is none.
    pub(super) fn next(&self) -> Option<Instant> {
        self.due.keys().next().copied()
    }

    /// Every value due at or before `now`, earliest first.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<T> {
        let later = match now.checked_add(std::time::Duration::from_nanos(1)) {
            Some(after) => self.due.split_off(&after),
            None => BTreeMap::new(),
        };
        std::mem::replace(&mut self.due, later)
            .into_values()
            .flatten()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn values_due_together_are_taken_together_in_order() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut timers = Timers::default();
        timers.insert(at(20), "c");
        timers.insert(at(10), "a");
        timers.insert(at(10), "b");
        timers.insert(at(30), "d");
        assert_eq!(timers.next(), Some(at(10)));
        assert!(timers.take_due(at(5)).is_empty());
        assert_eq!(timers.take_due(at(20)), vec!["a", "b", "c"]);
        assert_eq!(timers.next(), Some(at(30)));
        assert_eq!(timers.take_due(at(31)), vec!["d"]);
        assert_eq!(timers.next(), None);
    }
}
