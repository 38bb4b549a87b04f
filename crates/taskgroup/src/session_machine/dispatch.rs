//! Where the ranges a session's groups ask to run go: out to workers, held back by a pause, or
//! first checked against what the store recorded (a resumed run, a resumed pause, a broker that
//! lost work), and cut around the instances that already have their outcome.

use super::{SessionCommand, SessionMachine};
use crate::machine::TaskState;

/// Instances `start..end` of one task, run as one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Range {
    /// The group's index in the session.
    pub group: usize,
    /// The task's index in its group.
    pub task: usize,
    /// The first instance.
    pub start: u64,
    /// One past the last instance.
    pub end: u64,
    /// The attempt every instance of the range runs as.
    pub attempt: u32,
}

impl Range {
    /// How many instances it holds.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// What the store holds of one instance, as [`super::SessionEvent::Recorded`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The attempt of the stored outcome.
    pub attempt: u32,
    /// Whether it is a success.
    pub succeeded: bool,
}

impl Stored {
    /// Whether this outcome makes running `attempt` again needless: a success, or the outcome
    /// of that attempt or a later one.
    pub fn covers(&self, attempt: u32) -> bool {
        self.succeeded || self.attempt >= attempt
    }
}

impl SessionMachine {
    /// Sends a range a group asked for on its way: dropped while paused (resuming dispatches
    /// every unsettled instance), checked against the store when resuming a run, else out.
    pub(super) fn route(&mut self, range: Range, out: &mut Vec<SessionCommand>) {
        if self.paused {
            return;
        }
        out.push(if self.facts.resuming {
            SessionCommand::CheckRecorded(range)
        } else {
            SessionCommand::Dispatch(range)
        });
    }

    /// Pauses the run: workers are told, and nothing is dispatched until it resumes.
    pub(super) fn pause(&mut self, out: &mut Vec<SessionCommand>) {
        if !self.paused && !self.stopped {
            self.paused = true;
            out.push(SessionCommand::Pause { paused: true });
        }
    }

    /// Resumes a paused run: workers are told, and every unsettled instance is dispatched
    /// again (paused workers dropped what they had not started), less what is recorded.
    pub(super) fn resume(&mut self, out: &mut Vec<SessionCommand>) {
        if self.paused {
            self.paused = false;
            out.push(SessionCommand::Pause { paused: false });
            self.redispatch(out);
        }
    }

    /// Dispatched work may be gone (the broker lost its log): everything not settled is checked
    /// against the store and dispatched again. A paused run does so when it resumes; a stopped
    /// one dispatches nothing more.
    pub(super) fn work_lost(&mut self, out: &mut Vec<SessionCommand>) {
        if !self.paused && !self.stopped {
            self.redispatch(out);
        }
    }

    /// Every instance of a running group's task that has no final outcome and may run now, less
    /// those waiting for a retry's delay (their retry dispatches them), to check against the
    /// store and dispatch.
    fn redispatch(&mut self, out: &mut Vec<SessionCommand>) {
        let mut ranges = Vec::new();
        for (group, task, _) in self.unsettled() {
            let Some(machine) = self.group(group) else {
                continue;
            };
            for (start, end, attempt) in machine.undone(task) {
                let mut from = start;
                for instance in start..=end {
                    if instance == end || self.waiting.contains(&(group, task, instance)) {
                        if from < instance {
                            ranges.push(Range {
                                group,
                                task,
                                start: from,
                                end: instance,
                                attempt,
                            });
                        }
                        from = instance + 1;
                    }
                }
            }
        }
        let chunk = self.chunk;
        out.extend(
            merge_ranges(ranges, chunk)
                .into_iter()
                .map(SessionCommand::CheckRecorded),
        );
    }

    /// The store's answer for a range: what is left of it, the stretches of instances without
    /// an outcome that covers its attempt, is dispatched; nothing when its group stopped
    /// meanwhile or the run was paused.
    pub(super) fn recorded(
        &mut self,
        range: Range,
        stored: &[Option<Stored>],
        out: &mut Vec<SessionCommand>,
    ) {
        let running = self.group(range.group).is_some_and(|machine| {
            machine.status().is_none()
                && machine.tasks().get(range.task).map(|t| t.state) == Some(TaskState::Running)
        });
        if self.paused || !running {
            return;
        }
        let done = |offset: u64| {
            stored
                .get(offset as usize)
                .copied()
                .flatten()
                .is_some_and(|stored| stored.covers(range.attempt))
        };
        let mut from = None;
        for instance in range.start..=range.end {
            let left = instance < range.end && !done(instance - range.start);
            match (left, from) {
                (true, None) => from = Some(instance),
                (false, Some(start)) => {
                    out.push(SessionCommand::Dispatch(Range {
                        start,
                        end: instance,
                        ..range
                    }));
                    from = None;
                }
                _ => {}
            }
        }
    }

    /// Notices may have been missed: every running task's stored outcomes are read back (the
    /// machine ignores those it counted).
    pub(super) fn read_back(&self, out: &mut Vec<SessionCommand>) {
        out.extend(
            self.unsettled()
                .into_iter()
                .map(|(group, task, _)| SessionCommand::ReadOutcomes { group, task }),
        );
    }
}

/// Merges ranges of the same task and attempt that touch, up to `chunk` instances each: retries
/// due together (one instance each) leave as a few ranges, not one message per instance.
pub fn merge_ranges(mut ranges: Vec<Range>, chunk: u64) -> Vec<Range> {
    if ranges.len() < 2 {
        return ranges;
    }
    ranges.sort_by_key(|r| (r.group, r.task, r.attempt, r.start));
    let mut merged: Vec<Range> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last)
                if (last.group, last.task, last.attempt)
                    == (range.group, range.task, range.attempt)
                    && last.end == range.start
                    && range.end - last.start <= chunk =>
            {
                last.end = range.end;
            }
            _ => merged.push(range),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(task: usize, start: u64, end: u64, attempt: u32) -> Range {
        Range {
            group: 0,
            task,
            start,
            end,
            attempt,
        }
    }

    #[test]
    fn adjacent_ranges_of_one_task_and_attempt_merge_up_to_the_chunk() {
        let ranges = vec![
            range(0, 3, 4, 2),
            range(0, 0, 1, 2),
            range(0, 1, 2, 2),
            range(0, 2, 3, 2),
            range(0, 5, 6, 2),
            range(0, 4, 5, 3),
            range(1, 4, 5, 2),
        ];
        let merged: Vec<(usize, u64, u64, u32)> = merge_ranges(ranges, 3)
            .iter()
            .map(|r| (r.task, r.start, r.end, r.attempt))
            .collect();
        assert_eq!(
            merged,
            vec![
                (0, 0, 3, 2),
                (0, 3, 4, 2),
                (0, 5, 6, 2),
                (0, 4, 5, 3),
                (1, 4, 5, 2)
            ]
        );
    }

    #[test]
    fn an_outcome_covers_its_attempt_and_earlier_ones_a_success_every_one() {
        let failed = Stored {
            attempt: 2,
            succeeded: false,
        };
        assert!(failed.covers(1) && failed.covers(2) && !failed.covers(3));
        let succeeded = Stored {
            attempt: 1,
            succeeded: true,
        };
        assert!(succeeded.covers(5));
    }
}
