//! What a group machine takes and returns: [`Event`]s in, [`Command`]s out.

use super::GroupStatus;
use crate::failure::Failure;
use expansion::OutputFormat;
use std::time::Duration;

/// What happened to a group, fed to [`GroupMachine::handle`](super::GroupMachine::handle).
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
        /// How its results combine into the context (`None`: no expansion, its one result is
        /// written as it is).
        format: Option<OutputFormat>,
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
        /// The attempt, from 1.
        attempt: u32,
    },
    /// An attempt of an instance failed (or timed out); its error is stored.
    Failed {
        /// The task, by index in the group.
        task: usize,
        /// The instance, by index in the task.
        instance: u64,
        /// The attempt, from 1.
        attempt: u32,
        /// How it failed (a permanent failure fails the instance now).
        failure: Failure,
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
    /// An attempt's outcome: `failure` says how it failed, `None` for a success. `now` is the
    /// runtime's clock.
    pub fn outcome(
        task: usize,
        instance: u64,
        attempt: u32,
        failure: Option<Failure>,
        now: Duration,
    ) -> Self {
        match failure {
            None => Self::Succeeded {
                task,
                instance,
                attempt,
            },
            Some(failure) => Self::Failed {
                task,
                instance,
                attempt,
                failure,
                now,
            },
        }
    }
}

/// What a group asks its runtime to do, returned by [`GroupMachine::handle`](super::GroupMachine::handle).
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
