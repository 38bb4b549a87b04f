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

use crate::policy::{FailurePolicy, RetryPolicy};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// What the machine needs to know about one task of its group.
#[derive(Debug, Clone)]
pub struct TaskSetup {
    /// The task's id in the session file.
    pub id: String,
    /// Indices (in the group) of the tasks this one waits for.
    pub depends_on: Vec<usize>,
    /// When its failed instances are tried again.
    pub retry: RetryPolicy,
    /// Failed instances of this task do not count against the group.
    pub continue_on_error: bool,
}

/// What happened to a group, fed to [`GroupMachine::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The group's dependencies are met: start.
    Start,
    /// A task's expansion is known: `instances` instances. `now` is the runtime's clock.
    Planned {
        /// The task, by index in the group.
        task: usize,
        /// How many instances it expands to.
        instances: u64,
        /// The runtime's clock when it was planned.
        now: Duration,
    },
    /// A task's expansion could not be planned (e.g. the context it maps over is not a list).
    PlanFailed {
        /// The task, by index in the group.
        task: usize,
        /// Why planning failed.
        error: String,
    },
    /// An attempt of an instance succeeded and its result is stored.
    Succeeded {
        /// The task, by index in the group.
        task: usize,
        /// The instance, by index in the task.
        instance: u64,
        /// The attempt, from 0.
        attempt: u32,
    },
    /// An attempt of an instance failed (or timed out); its error is stored.
    Failed {
        /// The task, by index in the group.
        task: usize,
        /// The instance, by index in the task.
        instance: u64,
        /// The attempt, from 0.
        attempt: u32,
        /// The attempt's error.
        error: String,
        /// Retrying cannot fix it (the executor said so): the instance fails now.
        permanent: bool,
        /// The runtime's clock when the outcome arrived (retry budgets count from it).
        now: Duration,
    },
    /// A retry scheduled by [`Command::ScheduleRetry`] is due.
    RetryDue {
        /// The task, by index in the group.
        task: usize,
        /// The instance, by index in the task.
        instance: u64,
        /// The attempt now due.
        attempt: u32,
    },
    /// The task's combined result is in the context.
    ContextUpdated {
        /// The task, by index in the group.
        task: usize,
    },
    /// The task's results could not be combined (e.g. `merge` over mixed types).
    CombineFailed {
        /// The task, by index in the group.
        task: usize,
        /// Why combining failed.
        error: String,
    },
    /// The group's deadline passed.
    TimedOut,
    /// The group is stopped from outside (the session ended or was cancelled).
    Cancelled,
}

impl Event {
    /// An attempt's outcome: `failure` is its error and whether it is permanent, `None` for a
    /// success. `now` is the runtime's clock.
    pub fn outcome(
        task: usize,
        instance: u64,
        attempt: u32,
        failure: Option<(String, bool)>,
        now: Duration,
    ) -> Self {
        match failure {
            None => Self::Succeeded {
                task,
                instance,
                attempt,
            },
            Some((error, permanent)) => Self::Failed {
                task,
                instance,
                attempt,
                error,
                permanent,
                now,
            },
        }
    }
}

/// What a group asks its runtime to do, returned by [`GroupMachine::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Plan the task's expansion against the current context, then send `Planned`.
    Plan {
        /// The task, by index in the group.
        task: usize,
    },
    /// Execute instances `start..end` of the task with this attempt number.
    Dispatch {
        /// The task, by index in the group.
        task: usize,
        /// The first instance of the range.
        start: u64,
        /// One past the last instance of the range.
        end: u64,
        /// The attempt number every instance of the range runs as.
        attempt: u32,
    },
    /// Send `RetryDue` after `delay`.
    ScheduleRetry {
        /// The task, by index in the group.
        task: usize,
        /// The instance to retry.
        instance: u64,
        /// The attempt it will run as.
        attempt: u32,
        /// How long to wait first.
        delay: Duration,
    },
    /// Combine the task's results and write them to the context, then send `ContextUpdated`.
    UpdateContext {
        /// The task, by index in the group.
        task: usize,
    },
    /// Stop the group's running work.
    Cancel,
    /// The group has ended; nothing more comes from this machine.
    Finish {
        /// How it ended.
        status: GroupStatus,
    },
}

/// How a group ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStatus {
    /// Every task completed (or failed within its policy).
    Completed,
    /// Its failure policy was broken.
    Failed,
    /// Its deadline passed first.
    TimedOut,
    /// It was stopped from outside.
    Cancelled,
}

impl GroupStatus {
    /// The status as the result JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Waiting for the tasks it depends on.
    Waiting,
    /// Its expansion is being planned.
    Planning,
    /// Its instances are running.
    Running,
    /// Every instance settled; its results are being combined into the context.
    Combining,
    /// Its result is in the context.
    Done,
    /// It failed and its dependents will not run.
    Failed,
    /// Never started: a task it depends on failed, or the group ended first.
    Skipped,
}

impl TaskState {
    /// The task's status as the result JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting | Self::Skipped => "skipped",
            Self::Planning | Self::Running | Self::Combining => "incomplete",
            Self::Done => "completed",
            Self::Failed => "failed",
        }
    }
}

/// One failed attempt, as the machine takes it.
struct Failed {
    instance: u64,
    attempt: u32,
    error: String,
    permanent: bool,
}

/// A failed instance, kept for partial results.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Attempts made, the failed last one included.
    pub attempts: u32,
    /// The last attempt's error.
    pub error: String,
    /// The executor said retrying cannot fix it, so it was not retried.
    pub permanent: bool,
}

/// A task as its group machine tracks it: state and counts.
#[derive(Debug, Clone)]
pub struct TaskRun {
    /// What the task was set up with.
    pub setup: TaskSetup,
    /// Where it is in its life.
    pub state: TaskState,
    /// Its instance count, once planned.
    pub instances: u64,
    /// Instances that succeeded.
    pub succeeded: u64,
    /// Instances that failed for good (attempts used up, or permanent).
    pub failed: u64,
    /// Attempts whose outcome arrived.
    pub attempts: u64,
    /// Failed instances by index, with their attempts and last error.
    pub failures: BTreeMap<u64, Failure>,
    /// A task-level error (planning or combining).
    pub error: Option<String>,
    /// Stopped before all its instances settled and combined (its group stopped, or it failed
    /// the group): the results of its succeeded instances are reported on their own.
    pub cut_short: bool,
    done: Vec<u64>,
    /// Current attempt of instances that failed at least once.
    retrying: HashMap<u64, u32>,
    started: Duration,
}

impl TaskRun {
    fn new(setup: TaskSetup) -> Self {
        Self {
            setup,
            state: TaskState::Waiting,
            instances: 0,
            succeeded: 0,
            failed: 0,
            attempts: 0,
            failures: BTreeMap::new(),
            error: None,
            cut_short: false,
            done: Vec::new(),
            retrying: HashMap::new(),
            started: Duration::ZERO,
        }
    }

    fn is_done(&self, instance: u64) -> bool {
        self.done
            .get((instance / 64) as usize)
            .is_some_and(|word| word & (1 << (instance % 64)) != 0)
    }

    fn mark_done(&mut self, instance: u64) {
        if let Some(word) = self.done.get_mut((instance / 64) as usize) {
            *word |= 1 << (instance % 64);
        }
    }

    fn current_attempt(&self, instance: u64) -> u32 {
        self.retrying.get(&instance).copied().unwrap_or(1)
    }

    /// An outcome for this instance and attempt counts: in range, not terminal, not stale. An
    /// attempt newer than the one this machine dispatched counts too: a coordinator resuming a
    /// session finds outcomes of retries its predecessor dispatched.
    fn accepts(&self, instance: u64, attempt: u32) -> bool {
        self.state == TaskState::Running
            && instance < self.instances
            && !self.is_done(instance)
            && attempt >= self.current_attempt(instance)
    }

    /// Counts an accepted outcome of `attempt`, and the failed attempts before it this machine
    /// did not see.
    fn count_attempts(&mut self, instance: u64, attempt: u32) {
        self.attempts += u64::from(attempt - self.current_attempt(instance) + 1);
    }

    fn settled(&self) -> bool {
        self.succeeded + self.failed == self.instances
    }
}

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
        run.instances = instances;
        run.started = now;
        run.done = vec![0; instances.div_ceil(64) as usize];
        run.state = TaskState::Running;
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
            Some(delay) if !permanent && within_budget(delay) => {
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
