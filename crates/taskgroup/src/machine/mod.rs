//! The task group state machine: events in, commands out, no IO and no clock.
//!
//! The runtime (embedded or distributed) feeds it what happened (a task was planned, an
//! instance attempt succeeded or failed, a retry delay elapsed, the context was updated, the group
//! timed out) and carries out what it returns (plan a task, dispatch a range of instances,
//! schedule a retry, write a task's combined result to the context, cancel, finish).
//!
//! Invariants it keeps:
//! - an instance is counted once: a duplicate or stale outcome (an attempt older than the
//!   current one) is ignored, which is what makes at-least-once execution safe;
//! - a task's context is updated only when every one of its instances is terminal;
//! - a task starts only when every task it depends on has its context written;
//! - the group finishes exactly once, and after that every event is ignored.

mod io;
mod task;

pub use io::{Command, Event};
use task::Failed;
pub use task::{Failure, GroupStatus, TaskRun, TaskSetup, TaskState};

use crate::policy::FailurePolicy;
use std::time::Duration;

/// Instances per dispatched range: large enough that messages stay few, small enough that
/// several workers share a task.
pub const DEFAULT_CHUNK: u64 = 4096;

/// One group's state machine: events in, commands out, no IO and no clock.
#[derive(Debug, Clone)]
pub struct GroupMachine {
    policy: FailurePolicy,
    chunk: u64,
    tasks: Vec<TaskRun>,
    status: Option<GroupStatus>,
}

impl GroupMachine {
    /// A machine for a group of these tasks under this failure policy, not started yet.
    pub fn new(tasks: Vec<TaskSetup>, policy: FailurePolicy) -> Self {
        Self {
            policy,
            chunk: DEFAULT_CHUNK,
            tasks: tasks.into_iter().map(TaskRun::new).collect(),
            status: None,
        }
    }

    /// Sets the dispatch range size (at least 1).
    pub fn with_chunk(mut self, chunk: u64) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// The group's tasks, in session-file order.
    pub fn tasks(&self) -> &[TaskRun] {
        &self.tasks
    }

    /// `Some` once the group has finished.
    pub fn status(&self) -> Option<GroupStatus> {
        self.status
    }

    /// Takes one event and returns what the runtime must do about it, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        if self.status.is_some() {
            return out;
        }
        match event {
            Event::Start => self.start_ready(&mut out),
            Event::Planned {
                task,
                instances,
                now,
            } => self.planned(task, instances, now, &mut out),
            Event::PlanFailed { task, error } | Event::CombineFailed { task, error } => {
                if let Some(run) = self.tasks.get_mut(task) {
                    if matches!(run.state, TaskState::Planning | TaskState::Combining) {
                        run.error = Some(error);
                        self.task_failed(task, &mut out);
                    }
                }
            }
            Event::Succeeded {
                task,
                instance,
                attempt,
            } => {
                let Some(run) = self.tasks.get_mut(task) else {
                    return out;
                };
                if run.accepts(instance, attempt) {
                    run.count_attempts(instance, attempt);
                    run.succeeded += 1;
                    run.mark_done(instance);
                    // Most instances never failed: skip the hash lookup for them.
                    if !run.retrying.is_empty() {
                        run.retrying.remove(&instance);
                    }
                    self.after_outcome(task, &mut out);
                }
            }
            Event::Failed {
                task,
                instance,
                attempt,
                error,
                permanent,
                now,
            } => self.failed(
                task,
                Failed {
                    instance,
                    attempt,
                    error,
                    permanent,
                },
                now,
                &mut out,
            ),
            Event::RetryDue {
                task,
                instance,
                attempt,
            } => {
                if let Some(run) = self.tasks.get(task) {
                    if run.accepts(instance, attempt) {
                        out.push(Command::Dispatch {
                            task,
                            start: instance,
                            end: instance + 1,
                            attempt,
                        });
                    }
                }
            }
            Event::ContextUpdated { task } => {
                if let Some(run) = self.tasks.get_mut(task) {
                    if run.state == TaskState::Combining {
                        run.state = TaskState::Done;
                        self.start_ready(&mut out);
                    }
                }
            }
            Event::TimedOut => self.stop(GroupStatus::TimedOut, &mut out),
            Event::Cancelled => self.stop(GroupStatus::Cancelled, &mut out),
        }
        out
    }

    fn planned(&mut self, task: usize, instances: u64, now: Duration, out: &mut Vec<Command>) {
        let chunk = self.chunk;
        let Some(run) = self.tasks.get_mut(task) else {
            return;
        };
        if run.state != TaskState::Planning {
            return;
        }
        run.start_running(instances, now);
        let mut start = 0;
        while start < instances {
            let end = (start + chunk).min(instances);
            out.push(Command::Dispatch {
                task,
                start,
                end,
                attempt: 1,
            });
            start = end;
        }
        if instances == 0 {
            self.after_outcome(task, out);
        }
    }

    fn failed(&mut self, task: usize, failed: Failed, now: Duration, out: &mut Vec<Command>) {
        let Failed {
            instance,
            attempt,
            error,
            permanent,
        } = failed;
        let Some(run) = self.tasks.get_mut(task) else {
            return;
        };
        if !run.accepts(instance, attempt) {
            return;
        }
        run.count_attempts(instance, attempt);
        let next = attempt + 1;
        let delay = run
            .setup
            .retry
            .delay_before(next, jitter_sample(task, instance, next));
        let within_budget = |delay: Duration| {
            run.setup
                .retry
                .budget
                .is_none_or(|budget| now.saturating_sub(run.started) + delay <= budget)
        };
        match delay {
            Some(delay) if run.setup.retry.retries(&error, permanent) && within_budget(delay) => {
                run.retrying.insert(instance, next);
                out.push(Command::ScheduleRetry {
                    task,
                    instance,
                    attempt: next,
                    delay,
                });
            }
            _ => {
                run.failed += 1;
                run.mark_done(instance);
                run.retrying.remove(&instance);
                run.failures.insert(
                    instance,
                    Failure {
                        attempts: attempt,
                        error,
                        permanent,
                        at: now,
                    },
                );
                if !run.setup.continue_on_error && self.policy_exceeded() {
                    // This task failed the group: it says so, not that it was cut short.
                    let run = &mut self.tasks[task];
                    run.state = TaskState::Failed;
                    run.cut_short = true;
                    self.stop(GroupStatus::Failed, out);
                    return;
                }
                self.after_outcome(task, out);
            }
        }
    }

    /// Failures counted against the policy so far, out of the instances known so far.
    fn policy_exceeded(&self) -> bool {
        let counted = self.tasks.iter().filter(|t| !t.setup.continue_on_error);
        let failed = counted
            .clone()
            .map(|t| t.failed + u64::from(t.state == TaskState::Failed && t.error.is_some()))
            .sum();
        let total = self.tasks.iter().map(|t| t.instances).sum();
        self.policy.exceeded(failed, total)
    }

    fn after_outcome(&mut self, task: usize, out: &mut Vec<Command>) {
        let run = &mut self.tasks[task];
        if run.state == TaskState::Running && run.settled() {
            run.state = TaskState::Combining;
            out.push(Command::UpdateContext { task });
        }
    }

    fn task_failed(&mut self, task: usize, out: &mut Vec<Command>) {
        let run = &mut self.tasks[task];
        if run.setup.continue_on_error {
            // The task's failure is tolerated: dependents run, without its context.
            run.state = TaskState::Done;
            self.start_ready(out);
            return;
        }
        run.state = TaskState::Failed;
        if self.policy_exceeded() {
            self.stop(GroupStatus::Failed, out);
        } else {
            self.start_ready(out);
        }
    }

    /// Plans every waiting task whose dependencies are done; finishes when nothing can run.
    fn start_ready(&mut self, out: &mut Vec<Command>) {
        for t in 0..self.tasks.len() {
            let ready = self.tasks[t].state == TaskState::Waiting
                && self.tasks[t].setup.depends_on.iter().all(|&d| {
                    self.tasks
                        .get(d)
                        .is_some_and(|r| r.state == TaskState::Done)
                });
            if ready {
                self.tasks[t].state = TaskState::Planning;
                out.push(Command::Plan { task: t });
            }
        }
        let active = self.tasks.iter().any(|t| {
            matches!(
                t.state,
                TaskState::Planning | TaskState::Running | TaskState::Combining
            )
        });
        if !active {
            for run in &mut self.tasks {
                if run.state == TaskState::Waiting {
                    run.state = TaskState::Skipped;
                }
            }
            let failed = self.tasks.iter().any(|t| {
                !t.setup.continue_on_error
                    && (t.state == TaskState::Failed
                        || t.state == TaskState::Skipped
                        || t.failed > 0)
            });
            let status = if failed && !self.tolerated() {
                GroupStatus::Failed
            } else {
                GroupStatus::Completed
            };
            self.status = Some(status);
            out.push(Command::Finish { status });
        }
    }

    /// Under a threshold policy, failed instances within the threshold still complete the group;
    /// a failed or skipped task never does.
    fn tolerated(&self) -> bool {
        matches!(self.policy, FailurePolicy::Threshold(_))
            && !self.policy_exceeded()
            && self.tasks.iter().all(|t| {
                t.setup.continue_on_error
                    || !matches!(t.state, TaskState::Failed | TaskState::Skipped)
            })
    }

    fn stop(&mut self, status: GroupStatus, out: &mut Vec<Command>) {
        for run in &mut self.tasks {
            match run.state {
                TaskState::Waiting => run.state = TaskState::Skipped,
                TaskState::Running | TaskState::Combining => run.cut_short = true,
                _ => {}
            }
        }
        self.status = Some(status);
        out.push(Command::Cancel);
        out.push(Command::Finish { status });
    }
}

/// A deterministic sample in [0, 1) for retry jitter (splitmix64 of the instance's identity),
/// so the machine needs no random source and replays identically.
fn jitter_sample(task: usize, instance: u64, attempt: u32) -> f64 {
    let mut z = (task as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ instance.wrapping_mul(0xBF58_476D_1CE4_E5B9)
        ^ u64::from(attempt);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}
