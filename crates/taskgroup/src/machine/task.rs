//! A task as its group machine tracks it: its setup, state, counts and failures, and the rule
//! that decides whether an outcome counts.

use crate::failure::Failure;
use crate::policy::RetryPolicy;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// What the machine needs to know about one task of its group.
#[derive(Debug, Clone)]
pub struct TaskSetup {
    /// The task's id in the session file.
    pub id: String,
    /// Indices (in the group) of the tasks this one waits for.
    pub depends_on: Vec<usize>,
    /// Indices (in the group) of the tasks it depends on instance by instance: its instance
    /// `i` runs once instance `i` of each succeeded, and fails when one of them failed.
    pub each: Vec<usize>,
    /// When its failed instances are tried again.
    pub retry: RetryPolicy,
    /// Failed instances of this task do not count against the group.
    pub continue_on_error: bool,
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
pub(super) struct Failed {
    pub(super) instance: u64,
    pub(super) attempt: u32,
    pub(super) failure: Failure,
}

/// A failed instance, kept for partial results.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedInstance {
    /// Attempts made, the failed last one included.
    pub attempts: u32,
    /// How the last attempt failed.
    pub failure: Failure,
    /// When its last attempt failed, by the runtime's clock.
    pub at: Duration,
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
    pub failures: BTreeMap<u64, FailedInstance>,
    /// A task-level error (planning or combining).
    pub error: Option<String>,
    /// Stopped before all its instances settled and combined (its group stopped, or it failed
    /// the group): the results of its succeeded instances are reported on their own.
    pub cut_short: bool,
    /// How its results combine into the context, once planned (`None`: no expansion).
    pub format: Option<expansion::OutputFormat>,
    done: Vec<u64>,
    /// Current attempt of instances that failed at least once.
    pub(super) retrying: HashMap<u64, u32>,
    pub(super) started: Duration,
}

impl TaskRun {
    pub(super) fn new(setup: TaskSetup) -> Self {
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
            format: None,
            done: Vec::new(),
            retrying: HashMap::new(),
            started: Duration::ZERO,
        }
    }

    /// The task is planned with `instances` instances at `now`: none of them is done yet.
    /// When it was planned and started running, by the runtime's clock (zero before).
    pub fn started(&self) -> Duration {
        self.started
    }

    pub(super) fn start_running(&mut self, instances: u64, now: Duration) {
        self.instances = instances;
        self.started = now;
        self.done = vec![0; instances.div_ceil(64) as usize];
        self.state = TaskState::Running;
    }

    pub(super) fn is_done(&self, instance: u64) -> bool {
        self.done
            .get((instance / 64) as usize)
            .is_some_and(|word| word & (1 << (instance % 64)) != 0)
    }

    pub(super) fn mark_done(&mut self, instance: u64) {
        if let Some(word) = self.done.get_mut((instance / 64) as usize) {
            *word |= 1 << (instance % 64);
        }
    }

    /// The instances without a final outcome that `ready` lets run, as `(start, end, attempt)`:
    /// consecutive ones of the same current attempt together.
    pub(super) fn undone(&self, ready: impl Fn(u64) -> bool) -> Vec<(u64, u64, u32)> {
        let mut ranges: Vec<(u64, u64, u32)> = Vec::new();
        if self.state != TaskState::Running {
            return ranges;
        }
        for instance in 0..self.instances {
            if self.is_done(instance) || !ready(instance) {
                continue;
            }
            let attempt = self.current_attempt(instance);
            match ranges.last_mut() {
                Some((_, end, last)) if *end == instance && *last == attempt => *end += 1,
                _ => ranges.push((instance, instance + 1, attempt)),
            }
        }
        ranges
    }

    /// Whether `instance` ended, and succeeded.
    pub(super) fn succeeded_at(&self, instance: u64) -> bool {
        self.is_done(instance) && !self.failures.contains_key(&instance)
    }

    /// Whether `instance` ended, and failed.
    pub(super) fn failed_at(&self, instance: u64) -> bool {
        self.is_done(instance) && self.failures.contains_key(&instance)
    }

    pub(super) fn current_attempt(&self, instance: u64) -> u32 {
        self.retrying.get(&instance).copied().unwrap_or(1)
    }

    /// An outcome for this instance and attempt counts: in range, not terminal, not stale. An
    /// attempt newer than the one this machine dispatched counts too: a coordinator resuming a
    /// session finds outcomes of retries its predecessor dispatched.
    pub(super) fn accepts(&self, instance: u64, attempt: u32) -> bool {
        self.state == TaskState::Running
            && instance < self.instances
            && !self.is_done(instance)
            && attempt >= self.current_attempt(instance)
    }

    /// Counts an accepted outcome of `attempt`, and the failed attempts before it this machine
    /// did not see.
    pub(super) fn count_attempts(&mut self, instance: u64, attempt: u32) {
        self.attempts += u64::from(attempt - self.current_attempt(instance) + 1);
    }

    pub(super) fn settled(&self) -> bool {
        self.succeeded + self.failed == self.instances
    }
}
