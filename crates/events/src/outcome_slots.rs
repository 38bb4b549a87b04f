//! A task's outcomes in memory, by instance, in 12 bytes each: the attempt (0 where none is
//! recorded) and the status, kept boxed only where it is not a success with a `null` result.
//! Ten million no-op outcomes are 120 MB here, where a `Vec<Option<Outcome>>` took 560 MB.

use crate::messages::{Outcome, Status};
use crate::store::accept;
use serde_json::Value;
use std::ops::Range;

#[derive(Debug, Default, Clone)]
pub(crate) struct Slots {
    /// Per instance, its recorded attempt plus one; 0 where nothing is recorded.
    attempts: Vec<u32>,
    /// Per instance, its status, or `None` for a success with a `null` result.
    statuses: Vec<Option<Box<Status>>>,
    /// How many instances have an outcome.
    recorded: u64,
}

impl Slots {
    /// One past the highest instance with a slot.
    pub(crate) fn len(&self) -> usize {
        self.attempts.len()
    }

    /// How many instances have an outcome.
    pub(crate) fn recorded(&self) -> u64 {
        self.recorded
    }

    /// The outcome recorded for instance `i`, if any.
    pub(crate) fn get(&self, i: usize) -> Option<Outcome> {
        let attempt = self.attempts.get(i)?.checked_sub(1)?;
        let status = match &self.statuses[i] {
            Some(status) => (**status).clone(),
            None => Status::Succeeded(Value::Null),
        };
        Some(Outcome {
            instance: i as u64,
            attempt,
            status,
        })
    }

    /// The outcomes of instances `range`, `None` where there is none.
    pub(crate) fn range(&self, range: Range<usize>) -> Vec<Option<Outcome>> {
        range.map(|i| self.get(i)).collect()
    }

    /// Sets instance `i`'s outcome (or clears it), growing the slots as needed.
    pub(crate) fn set(&mut self, i: usize, outcome: Option<Outcome>) {
        if self.attempts.len() <= i {
            self.attempts.resize(i + 1, 0);
            self.statuses.resize(i + 1, None);
        }
        let had = self.attempts[i] != 0;
        self.recorded = self.recorded + u64::from(outcome.is_some()) - u64::from(had);
        match outcome {
            None => {
                self.attempts[i] = 0;
                self.statuses[i] = None;
            }
            Some(outcome) => {
                self.attempts[i] = outcome.attempt.saturating_add(1);
                self.statuses[i] = match outcome.status {
                    Status::Succeeded(Value::Null) => None,
                    status => Some(Box::new(status)),
                };
            }
        }
    }

    /// Records `outcome` under the recording rule ([`accept`]); whether it was taken.
    pub(crate) fn record(&mut self, outcome: Outcome) -> bool {
        let i = outcome.instance as usize;
        let mut slot = self.get(i);
        let accepted = accept(&mut slot, outcome);
        if accepted {
            self.set(i, slot);
        }
        accepted
    }

    /// Clears every outcome but the successes; how many successes stay.
    pub(crate) fn keep_successes(&mut self) -> u64 {
        let mut kept = 0;
        for i in 0..self.len() {
            match self.get(i) {
                Some(outcome) if outcome.succeeded() => kept += 1,
                Some(_) => self.set(i, None),
                None => {}
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use taskgroup::Failure;

    fn outcome(instance: u64, attempt: u32, status: Status) -> Outcome {
        Outcome {
            instance,
            attempt,
            status,
        }
    }

    #[test]
    fn slots_keep_what_is_recorded_under_the_recording_rule() {
        let mut slots = Slots::default();
        assert!(slots.record(outcome(3, 1, Status::Failed(Failure::error("x")))));
        assert!(slots.record(outcome(3, 2, Status::Succeeded(Value::Null))));
        assert!(
            !slots.record(outcome(3, 3, Status::Succeeded(json!(1)))),
            "a success is final"
        );
        assert!(slots.record(outcome(1, 0, Status::Succeeded(json!({"a": 1})))));
        assert_eq!(
            slots.range(0..5),
            vec![
                None,
                Some(outcome(1, 0, Status::Succeeded(json!({"a": 1})))),
                None,
                Some(outcome(3, 2, Status::Succeeded(Value::Null))),
                None
            ]
        );
        assert!(slots.record(outcome(
            0,
            1,
            Status::Failed(Failure::new(taskgroup::FailureKind::Timeout, "t"))
        )));
        assert_eq!(slots.recorded(), 3);
        assert_eq!(slots.keep_successes(), 2);
        assert_eq!(slots.get(0), None);
        assert_eq!(slots.recorded(), 2);
        assert_eq!(std::mem::size_of::<Option<Box<Status>>>() + 4, 12);
    }
}
