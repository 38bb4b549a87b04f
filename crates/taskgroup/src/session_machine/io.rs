//! What a session machine takes and returns: [`SessionEvent`]s in, [`SessionCommand`]s out, and
//! the [`RunFacts`] it reports.

use super::dispatch::{Range, Stored};
use crate::machine::{Command, Event, GroupStatus};
use std::time::Duration;

/// What happened, fed to [`SessionMachine::handle`](super::SessionMachine::handle).
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// Start the groups that depend on nothing.
    Start,
    /// Something happened in a started group.
    Group {
        /// The group's index in the session.
        group: usize,
        /// What happened in it.
        event: Event,
    },
    /// A deadline armed by [`SessionCommand::Arm`] passed.
    Deadline(Deadline),
    /// Stop everything: running groups end `cancelled`, the rest are skipped.
    Cancel,
    /// Pause the run (`agency pause`): workers start no more of its instances, and nothing is
    /// dispatched until it resumes. Deadlines go on.
    Pause,
    /// Resume a paused run.
    Resume,
    /// Work dispatched may never arrive (the broker lost its log).
    WorkLost,
    /// Notices may have been missed (the subscription was renewed, or has been quiet a while):
    /// read back what the store holds.
    Quiet,
    /// The answer to [`SessionCommand::CheckRecorded`]: what the store holds of each instance
    /// of the range, in order (`None`: no outcome).
    Recorded {
        /// The range checked.
        range: Range,
        /// Its instances' stored outcomes.
        stored: Vec<Option<Stored>>,
    },
}

/// A deadline the machine asks the runtime to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deadline {
    /// The whole session's `timeout_ms`.
    Session,
    /// A group's `timeout_ms`, from its start.
    Group(usize),
}

/// What to do, returned by [`SessionMachine::handle`](super::SessionMachine::handle).
#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    /// Carry out a group's command (any but [`Command::Dispatch`], which becomes
    /// [`SessionCommand::Dispatch`] or [`SessionCommand::CheckRecorded`], and
    /// [`Command::Finish`], which becomes [`SessionCommand::Ended`]).
    Group {
        /// The group's index in the session.
        group: usize,
        /// What to do for it.
        command: Command,
    },
    /// Send [`SessionEvent::Deadline`] after this long.
    Arm {
        /// Which deadline.
        deadline: Deadline,
        /// From now.
        after: Duration,
    },
    /// A group started (for logs and live state; nothing to carry out).
    Started {
        /// The group's index in the session.
        group: usize,
    },
    /// A group ended (for logs and live state; nothing to carry out).
    Ended {
        /// The group's index in the session.
        group: usize,
        /// How.
        status: GroupStatus,
    },
    /// Write `value` to the context under `key` before carrying out the commands after this
    /// one (the session's status and errors for exit handlers, under `_session`).
    WriteContext {
        /// The top-level context key.
        key: String,
        /// Its value.
        value: serde_json::Value,
    },
    /// Every group ended: read what [`SessionMachine::finishing`](super::SessionMachine::finishing) asks, then build the result
    /// ([`SessionMachine::finish`](super::SessionMachine::finish)).
    Finish,
    /// Send this range to workers.
    Dispatch(Range),
    /// Read what the store holds of the range's instances and answer
    /// [`SessionEvent::Recorded`]: the machine dispatches what is left to run.
    CheckRecorded(Range),
    /// Read every stored outcome of the task and feed them back as its group's events.
    ReadOutcomes {
        /// The group's index in the session.
        group: usize,
        /// The task's index in the group.
        task: usize,
    },
    /// Tell workers the run is paused (they start none of its instances and drop what they
    /// hold of it), or resumed.
    Pause {
        /// Paused, or resumed.
        paused: bool,
    },
}

/// What the runtime knows of a run that the machine reports in its live state and result.
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    /// The run's name.
    pub run: Option<String>,
    /// When the session was submitted, if its submission said.
    pub submitted_at: Option<String>,
    /// When the run started, by the store's clock (ms since the Unix epoch).
    pub started_ms: u64,
    /// A rerun: how many successes of the run before it reuses.
    pub reused: Option<u64>,
    /// Taking over from a run that stopped: every range is checked against the store before
    /// it is dispatched, and each task's stored outcomes are read as it is planned.
    pub resuming: bool,
}
