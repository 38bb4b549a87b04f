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
pub use task::{FailedInstance, GroupStatus, TaskRun, TaskSetup, TaskState};

use crate::failure::Failure;
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

    /// Task `task`'s instances without a final outcome that may run now (those depending
    /// instance by instance wait for their upstream instances), as `(start, end, attempt)`:
    /// consecutive ones of the same current attempt together. What a runtime dispatches again
    /// when work it sent may have been dropped (a paused run resuming, a broker's lost log).
    pub fn undone(&self, task: usize) -> Vec<(u64, u64, u32)> {
        let Some(run) = self.tasks.get(task) else {
            return Vec::new();
        };
        run.undone(|instance| self.upstream_succeeded(task, instance))
    }

    /// Whether every task `task` depends on instance by instance has instance `instance`
    /// succeeded (true without such dependencies).
    fn upstream_succeeded(&self, task: usize, instance: u64) -> bool {
        self.tasks[task]
            .setup
            .each
            .iter()
            .all(|&u| self.tasks.get(u).is_some_and(|r| r.succeeded_at(instance)))
    }

    /// The tasks depending on `task` instance by instance.
    fn dependents(&self, task: usize) -> Vec<usize> {
        (0..self.tasks.len())
            .filter(|&d| self.tasks[d].setup.each.contains(&task))
            .collect()
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
                format,
                now,
            } => {
                if let Some(run) = self.tasks.get_mut(task) {
                    if run.state == TaskState::Planning {
                        run.format = format;
                    }
                }
                self.planned(task, instances, now, &mut out)
            }
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
                    self.release(task, instance, &mut out);
                }
            }
            Event::Failed {
                task,
                instance,
                attempt,
                failure,
                now,
            } => self.failed(
                task,
                Failed {
                    instance,
                    attempt,
                    failure,
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
        if !run.setup.each.is_empty() {
            return self.planned_each(task, instances, now, out);
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
        self.plan_dependents(task, out);
    }

    /// Plans the tasks waiting for `task` to be planned, to depend on it instance by instance.
    fn plan_dependents(&mut self, task: usize, out: &mut Vec<Command>) {
        if self.status.is_none() && !self.dependents(task).is_empty() {
            self.start_ready(out);
        }
    }

    /// A task depending instance by instance is planned: the instances whose upstream instances
    /// all succeeded are dispatched now, those with a failed one fail, the rest wait.
    fn planned_each(&mut self, task: usize, instances: u64, now: Duration, out: &mut Vec<Command>) {
        let mismatch = self.tasks[task].setup.each.iter().find_map(|&u| {
            let upstream = &self.tasks[u];
            (upstream.instances != instances).then(|| {
                format!(
                    "task `{}` has {instances} instances and task `{}` {}: depending instance by instance needs the same count",
                    self.tasks[task].setup.id, upstream.setup.id, upstream.instances
                )
            })
        });
        if let Some(error) = mismatch {
            self.tasks[task].error = Some(error);
            return self.task_failed(task, out);
        }
        self.tasks[task].start_running(instances, now);
        let mut skipped = Vec::new();
        let mut ready: Vec<(u64, u64)> = Vec::new();
        for instance in 0..instances {
            if let Some(reason) = self.upstream_failure(task, instance) {
                skipped.push((instance, reason));
            } else if self.upstream_succeeded(task, instance) {
                match ready.last_mut() {
                    Some((start, end)) if *end == instance && *end - *start < self.chunk => {
                        *end += 1
                    }
                    _ => ready.push((instance, instance + 1)),
                }
            }
        }
        for (start, end) in ready {
            out.push(Command::Dispatch {
                task,
                start,
                end,
                attempt: 1,
            });
        }
        for (instance, reason) in skipped {
            if self.status.is_some() {
                return;
            }
            self.skip(task, instance, reason, now, out);
        }
        if instances == 0 {
            self.after_outcome(task, out);
        }
        self.plan_dependents(task, out);
    }

    /// Why instance `instance` of `task` cannot run: an upstream instance it depends on failed.
    fn upstream_failure(&self, task: usize, instance: u64) -> Option<String> {
        self.tasks[task].setup.each.iter().find_map(|&u| {
            let upstream = self.tasks.get(u)?;
            upstream
                .failed_at(instance)
                .then(|| not_run(instance, &upstream.setup.id))
        })
    }

    /// Instance `instance` of `task` succeeded: dispatches that instance of each task depending
    /// on it instance by instance, when their other upstream instances succeeded too.
    fn release(&mut self, task: usize, instance: u64, out: &mut Vec<Command>) {
        for d in self.dependents(task) {
            let run = &self.tasks[d];
            if run.state != TaskState::Running
                || instance >= run.instances
                || run.is_done(instance)
                || !self.upstream_succeeded(d, instance)
            {
                continue;
            }
            out.push(Command::Dispatch {
                task: d,
                start: instance,
                end: instance + 1,
                attempt: run.current_attempt(instance),
            });
        }
    }

    /// Instance `instance` of `task` failed for good: the same instance of every task depending
    /// on it instance by instance fails without running, and so on down its chain.
    fn skip_dependents(
        &mut self,
        task: usize,
        instance: u64,
        now: Duration,
        out: &mut Vec<Command>,
    ) {
        let mut below = vec![task];
        while let Some(upstream) = below.pop() {
            for d in self.dependents(upstream) {
                let run = &self.tasks[d];
                if self.status.is_some() {
                    return;
                }
                if run.state != TaskState::Running
                    || instance >= run.instances
                    || run.is_done(instance)
                {
                    continue;
                }
                let reason = not_run(instance, &self.tasks[upstream].setup.id);
                if self.fail_instance(
                    d,
                    instance,
                    failed_instance(0, Failure::permanent(reason), now),
                    out,
                ) {
                    below.push(d);
                }
            }
        }
    }

    /// Fails instance `instance` of `task` without running it, then what depends on it.
    fn skip(
        &mut self,
        task: usize,
        instance: u64,
        reason: String,
        now: Duration,
        out: &mut Vec<Command>,
    ) {
        if self.fail_instance(
            task,
            instance,
            failed_instance(0, Failure::permanent(reason), now),
            out,
        ) {
            self.skip_dependents(task, instance, now, out);
        }
    }

    fn failed(&mut self, task: usize, failed: Failed, now: Duration, out: &mut Vec<Command>) {
        let Failed {
            instance,
            attempt,
            failure,
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
            Some(delay) if run.setup.retry.retries(&failure) && within_budget(delay) => {
                run.retrying.insert(instance, next);
                out.push(Command::ScheduleRetry {
                    task,
                    instance,
                    attempt: next,
                    delay,
                });
            }
            _ => {
                if self.fail_instance(task, instance, failed_instance(attempt, failure, now), out) {
                    self.skip_dependents(task, instance, now, out);
                }
            }
        }
    }

    /// Records instance `instance` of `task` as failed for good; stops the group when that
    /// breaks its policy. Returns whether the group goes on.
    fn fail_instance(
        &mut self,
        task: usize,
        instance: u64,
        failed: FailedInstance,
        out: &mut Vec<Command>,
    ) -> bool {
        let run = &mut self.tasks[task];
        run.failed += 1;
        run.mark_done(instance);
        run.retrying.remove(&instance);
        run.failures.insert(instance, failed);
        if !run.setup.continue_on_error && self.policy_exceeded() {
            // This task failed the group: it says so, not that it was cut short.
            let run = &mut self.tasks[task];
            run.state = TaskState::Failed;
            run.cut_short = true;
            self.stop(GroupStatus::Failed, out);
            return false;
        }
        self.after_outcome(task, out);
        true
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
            // A task depending instance by instance is planned once its upstream is: its
            // instances are dispatched one by one as the upstream ones succeed.
            let ready = self.tasks[t].state == TaskState::Waiting
                && self.tasks[t].setup.depends_on.iter().all(|&d| {
                    self.tasks
                        .get(d)
                        .is_some_and(|r| r.state == TaskState::Done)
                })
                && self.tasks[t].setup.each.iter().all(|&u| {
                    self.tasks.get(u).is_some_and(|r| {
                        matches!(
                            r.state,
                            TaskState::Running | TaskState::Combining | TaskState::Done
                        )
                    })
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

    /// Whether task `task`'s failed instances are tolerated, so that it is done with failures
    /// rather than failed: by its own `continue_on_error`, or by the group's threshold while
    /// the group stays within it. Under fail-fast or all-settled they fail the group, and the
    /// task with them.
    pub fn tolerates_failures_of(&self, task: usize) -> bool {
        self.tasks
            .get(task)
            .is_some_and(|run| run.setup.continue_on_error)
            || self.tolerated()
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

/// Why an instance did not run: the same instance of task `upstream`, which it depends on
/// instance by instance, failed.
fn not_run(instance: u64, upstream: &str) -> String {
    format!("not run: instance {instance} of task `{upstream}` failed")
}

/// A failed instance's record.
fn failed_instance(attempts: u32, failure: Failure, at: Duration) -> FailedInstance {
    FailedInstance {
        attempts,
        failure,
        at,
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
