//! Finishing the result: what the runtime must read from the store for it (the results of tasks
//! cut short, how many memoized results were used), and the result built from those answers,
//! with the run's times.

use super::SessionMachine;
use crate::live::iso8601;
use crate::machine::TaskState;
use crate::result::{InstanceResult, SessionResult};
use serde_json::{Map, Value};
use std::time::Duration;

/// What the result needs from the store, asked by [`SessionMachine::finishing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishRead {
    /// A task cut short: list the results the store holds of its `instances` (answer
    /// [`Finished::Listed`]).
    List {
        /// The group's index.
        group: usize,
        /// The task's index in the group.
        task: usize,
        /// Its instance count.
        instances: u64,
    },
    /// A task cut short with more results than its `inline_results` lists: keep them in the
    /// store, past the session's cleanup, and count them (answer [`Finished::Kept`]).
    Keep {
        /// The group's index.
        group: usize,
        /// The task's index in the group.
        task: usize,
        /// Its instance count.
        instances: u64,
    },
    /// A memoizing task: count its instances whose memoized result was used instead of running
    /// (answer [`Finished::Cached`]).
    CountCached {
        /// The group's index.
        group: usize,
        /// The task's index in the group.
        task: usize,
        /// Its instance count.
        instances: u64,
    },
}

/// The store's answer to a [`FinishRead`].
#[derive(Debug, Clone, PartialEq)]
pub enum Finished {
    /// The results stored of a task cut short, in instance order.
    Listed {
        /// The group's index.
        group: usize,
        /// The task's index in the group.
        task: usize,
        /// Its results.
        results: Vec<InstanceResult>,
    },
    /// A task cut short whose results stay in the store.
    Kept {
        /// The group's index.
        group: usize,
        /// The task's index in the group.
        task: usize,
        /// The reference to them (`{"$results": ...}`).
        reference: Value,
        /// How many results the store holds.
        count: u64,
    },
    /// How many of a memoizing task's instances used their memoized result.
    Cached {
        /// The group's index.
        group: usize,
        /// The task's index in the group.
        task: usize,
        /// How many.
        cached: u64,
    },
}

impl SessionMachine {
    /// What to read from the store for the result, once finished.
    pub fn finishing(&self) -> Vec<FinishRead> {
        let mut reads = Vec::new();
        for (group, task) in self.cut_short() {
            let instances = self.instances(group, task);
            reads.push(
                if self.plans[group].finish[task].inline.holds(instances, 0) {
                    FinishRead::List {
                        group,
                        task,
                        instances,
                    }
                } else {
                    FinishRead::Keep {
                        group,
                        task,
                        instances,
                    }
                },
            );
        }
        for (group, plan) in self.plans.iter().enumerate() {
            for (task, finish) in plan.finish.iter().enumerate() {
                if finish.memoized {
                    reads.push(FinishRead::CountCached {
                        group,
                        task,
                        instances: self.instances(group, task),
                    });
                }
            }
        }
        reads
    }

    /// The final result, with `context` moved in and the answers to [`Self::finishing`]. A task
    /// cut short counts as succeeded the results the store holds: outcomes recorded after the
    /// machine stopped (a cancel reaches running instances a moment later) completed all the
    /// same.
    pub fn finish(
        &self,
        session_id: &str,
        context: Map<String, Value>,
        answers: Vec<Finished>,
    ) -> SessionResult {
        let mut result = self.result(session_id, context);
        for answer in answers {
            let (group, task) = match &answer {
                Finished::Listed { group, task, .. }
                | Finished::Kept { group, task, .. }
                | Finished::Cached { group, task, .. } => (*group, *task),
            };
            let plan = &self.plans[group];
            let Some(summary) = result
                .groups
                .get_mut(&plan.id)
                .and_then(|summary| summary.tasks.get_mut(&plan.setups[task].id))
            else {
                continue;
            };
            match answer {
                Finished::Listed { results, .. } if !results.is_empty() => {
                    summary.succeeded = summary.succeeded.max(results.len() as u64);
                    summary.results = Some(results);
                }
                Finished::Listed { .. } => {}
                Finished::Kept {
                    reference, count, ..
                } => {
                    summary.results_kept = Some(reference);
                    summary.succeeded = summary.succeeded.max(count);
                }
                Finished::Cached { cached, .. } => {
                    // A memoized result arrived as the outcome of an attempt that never ran.
                    summary.cached = cached;
                    summary.attempts = summary.attempts.saturating_sub(cached);
                }
            }
        }
        result.reused = self.facts.reused;
        self.stamp(&mut result);
        result
    }

    /// Puts the times in the result, by the store's clock: the run's, each task's that ran
    /// (started when planned, finished when its last instance settled, or when the run ended
    /// for a task cut short), and each failed instance's last attempt.
    fn stamp(&self, result: &mut SessionResult) {
        let end = self.now;
        let at = |d: Duration| iso8601(self.facts.started_ms.saturating_add(millis(d)));
        result.submitted_at.clone_from(&self.facts.submitted_at);
        result.started_at = Some(at(Duration::ZERO));
        result.finished_at = Some(at(end));
        result.duration_ms = Some(millis(end));
        for (g, plan) in self.plans.iter().enumerate() {
            let (Some(machine), Some(summary)) = (self.group(g), result.groups.get_mut(&plan.id))
            else {
                continue;
            };
            for (t, run) in machine.tasks().iter().enumerate() {
                let Some(task) = summary
                    .tasks
                    .get_mut(&plan.setups[t].id)
                    .filter(|_| ran(run.state))
                else {
                    continue;
                };
                let started = run.started();
                let finished = self.settled_at(g, t).unwrap_or(end).max(started);
                task.started_at = Some(at(started));
                task.finished_at = Some(at(finished));
                task.duration_ms = Some(millis(finished - started));
                for failure in &mut task.failures {
                    if let Some(failed) = run.failures.get(&failure.instance) {
                        failure.last_attempt_at = Some(at(failed.at));
                    }
                }
            }
        }
    }
}

/// Whether a task in this state was planned and ran (or runs).
pub(super) fn ran(state: TaskState) -> bool {
    !matches!(
        state,
        TaskState::Waiting | TaskState::Planning | TaskState::Skipped
    )
}

/// A duration in whole milliseconds.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
