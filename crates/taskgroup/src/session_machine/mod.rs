//! The session state machine: events in, commands out, no IO and no clock.
//!
//! It owns one [`GroupMachine`] per started group and decides what only the session can: which
//! groups start (every dependency completed) or are skipped (one did not), the session's and each
//! group's deadline (as data: "arm this deadline after that long"), cancellation, the errors of
//! the run, and the final [`SessionResult`](crate::SessionResult). The runtime carries out the group commands it passes
//! on, and feeds back what happened.
//!
//! Invariants it keeps:
//! - a group starts at most once, and only when every group it depends on completed;
//! - after a cancel or the session's deadline nothing new starts, and every running group stops;
//! - exit handlers (`on_exit` groups) start once every other group has ended or was skipped,
//!   however they ended, right after [`SessionCommand::WriteContext`] of `_session`; a cancel or
//!   the session's deadline does not stop them (their own `timeout_ms` does);
//! - [`SessionCommand::Finish`] is sent exactly once, when every group ended or was skipped;
//! - nothing is dispatched while paused; resuming, or hearing that dispatched work was lost,
//!   dispatches every unsettled instance not waiting for a retry's delay, less what the store
//!   recorded (`dispatch.rs`);
//! - a run resumed from the store checks every range against it before dispatching, and reads
//!   each task's stored outcomes as it is planned.
//!
//! Besides its events, it takes the runtime's clock ([`SessionMachine::advance`]) and the run's
//! names and times ([`RunFacts`]), from which it reports the live state (`state.rs`) and finishes
//! the result (`finish.rs`).

mod dispatch;
mod finish;
mod io;
mod report;
mod state;

pub use dispatch::{merge_ranges, Range, Stored};
pub use finish::{FinishRead, Finished};
pub use io::{Deadline, RunFacts, SessionCommand, SessionEvent};

use crate::inline::InlineResults;
use crate::machine::{Command, Event, GroupMachine, TaskSetup, TaskState};
use crate::result::GroupOutcome;
use crate::session::Session;
pub use crate::session_error::SessionError;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Where a group is: one slot per group, instead of parallel vectors of machines and ends.
#[derive(Debug, Clone)]
pub enum GroupSlot {
    /// Not started: its dependencies have not all completed yet.
    Waiting,
    /// Started; its machine says whether it has finished.
    Started(GroupMachine),
    /// Never started.
    Skipped(Skip),
}

/// Why a group never started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A group it depends on did not complete.
    Blocked,
    /// The session was cancelled or timed out first.
    Stopped,
}

/// A group's fixed facts, taken from the validated session.
#[derive(Debug, Clone)]
struct GroupPlan {
    id: String,
    labels: Labels,
    /// `task_labels[t]` belongs to `setups[t]`.
    task_labels: Vec<Labels>,
    depends_on: Vec<usize>,
    setups: Vec<TaskSetup>,
    policy: crate::FailurePolicy,
    timeout: Option<Duration>,
    /// An exit handler: starts when every other group has ended.
    on_exit: bool,
    /// `finish[t]`: what finishing the result reads of task `t`.
    finish: Vec<TaskFinish>,
}

/// What finishing the result needs to know of a task.
#[derive(Debug, Clone, Copy)]
struct TaskFinish {
    /// It memoizes its instances: the result counts those whose memoized result was used.
    memoized: bool,
    /// How many of its results the result lists.
    inline: InlineResults,
}

/// The `name` and `description` a session file gives a group or a task, for people.
#[derive(Debug, Clone, Default)]
struct Labels {
    name: Option<String>,
    description: Option<String>,
}

/// Instances planned, settled and failed so far, over every started group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Instances of the tasks planned so far.
    pub planned: u64,
    /// Instances with a final outcome.
    pub settled: u64,
    /// Instances that failed after their last attempt.
    pub failed: u64,
    /// Tasks that may still run but are not planned yet (their groups have not started, or
    /// they wait for tasks before them): `planned` grows when they are.
    pub to_plan: u64,
}

/// One session's run, as decisions over events.
#[derive(Debug, Clone)]
pub struct SessionMachine {
    plans: Vec<GroupPlan>,
    /// The session file's `description` and `metadata`, carried into live state and result.
    description: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    slots: Vec<GroupSlot>,
    chunk: u64,
    timeout: Option<Duration>,
    /// Cancelled or past the session's deadline: nothing new starts.
    stopped: bool,
    /// Every other group has ended and the exit handlers were started.
    exiting: bool,
    finished: bool,
    errors: Vec<SessionError>,
    /// Paused: nothing is dispatched.
    paused: bool,
    /// Instances waiting for a retry's delay: `(group, task, instance)`.
    waiting: HashSet<(usize, usize, u64)>,
    /// When each task's last instance settled, by the runtime's clock.
    settled_at: HashMap<(usize, usize), Duration>,
    /// The runtime's clock as of the last [`SessionMachine::advance`].
    now: Duration,
    facts: RunFacts,
}

impl SessionMachine {
    /// A machine for `session`, dispatching ranges of at most `chunk` instances.
    pub fn new(session: &Session, chunk: u64) -> Self {
        let plans = session
            .spec
            .groups
            .iter()
            .zip(&session.groups)
            .zip(&session.tasks)
            .map(|((spec, group), tasks)| GroupPlan {
                id: spec.id.clone(),
                labels: Labels {
                    name: spec.name.clone(),
                    description: spec.description.clone(),
                },
                task_labels: spec
                    .tasks
                    .iter()
                    .map(|task| Labels {
                        name: task.name.clone(),
                        description: task.description.clone(),
                    })
                    .collect(),
                depends_on: group.depends_on.clone(),
                setups: spec
                    .tasks
                    .iter()
                    .zip(tasks)
                    .map(|(task, plan)| TaskSetup {
                        id: task.id.clone(),
                        depends_on: plan.depends_on.clone(),
                        each: plan.each.clone(),
                        retry: plan.retry.clone(),
                        continue_on_error: task.continue_on_error,
                    })
                    .collect(),
                policy: group.failure_policy,
                timeout: group.timeout,
                on_exit: spec.on_exit,
                finish: tasks
                    .iter()
                    .map(|plan| TaskFinish {
                        memoized: plan.memoize.is_some(),
                        inline: plan.inline,
                    })
                    .collect(),
            })
            .collect::<Vec<_>>();
        Self {
            slots: plans.iter().map(|_| GroupSlot::Waiting).collect(),
            plans,
            description: session.spec.description.clone(),
            metadata: session.spec.metadata.clone(),
            chunk: chunk.max(1),
            timeout: session.timeout,
            stopped: false,
            exiting: false,
            finished: false,
            errors: Vec::new(),
            paused: false,
            waiting: HashSet::new(),
            settled_at: HashMap::new(),
            now: Duration::ZERO,
            facts: RunFacts::default(),
        }
    }

    /// Sets what the runtime knows of the run (before [`SessionEvent::Start`]).
    pub fn with_facts(mut self, facts: RunFacts) -> Self {
        self.facts = facts;
        self
    }

    /// The runtime's clock now: the time since the run started, which the machine stamps on
    /// what it records and reports.
    pub fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    /// The runtime's clock as of the last [`Self::advance`].
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Whether the run is paused.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// A task's instance count (0 before it is planned).
    pub fn instances(&self, group: usize, task: usize) -> u64 {
        self.group(group)
            .and_then(|machine| machine.tasks().get(task))
            .map_or(0, |run| run.instances)
    }

    /// How many of a task's instances succeeded.
    pub fn succeeded(&self, group: usize, task: usize) -> u64 {
        self.group(group)
            .and_then(|machine| machine.tasks().get(task))
            .map_or(0, |run| run.succeeded)
    }

    /// When the task's last instance settled, by the runtime's clock.
    fn settled_at(&self, group: usize, task: usize) -> Option<Duration> {
        self.settled_at.get(&(group, task)).copied()
    }

    /// Each group's slot, in the session's order.
    pub fn slots(&self) -> &[GroupSlot] {
        &self.slots
    }

    /// The machine of a started group.
    pub fn group(&self, group: usize) -> Option<&GroupMachine> {
        match self.slots.get(group) {
            Some(GroupSlot::Started(machine)) => Some(machine),
            _ => None,
        }
    }

    /// Whether the group started and has not finished.
    pub fn is_running(&self, group: usize) -> bool {
        self.group(group).is_some_and(|m| m.status().is_none())
    }

    /// Whether every group ended or was skipped.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Tasks still waiting for outcomes: `(group, task, instances)` of every running task with
    /// an instance not yet settled.
    pub fn unsettled(&self) -> Vec<(usize, usize, u64)> {
        (0..self.slots.len())
            .filter(|&g| self.is_running(g))
            .flat_map(|g| {
                let tasks = self.group(g).map_or(0, |m| m.tasks().len());
                (0..tasks)
                    .filter(move |&t| self.unsettled_task(g, t))
                    .map(move |t| (g, t, self.instances(g, t)))
            })
            .collect()
    }

    /// Instances planned, settled and failed so far.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for (slot, plan) in self.slots.iter().zip(&self.plans) {
            match slot {
                GroupSlot::Started(machine) => {
                    for task in machine.tasks() {
                        counts.planned += task.instances;
                        counts.settled += task.succeeded + task.failed;
                        counts.failed += task.failed;
                        counts.to_plan += u64::from(task.state == TaskState::Waiting);
                    }
                }
                GroupSlot::Waiting if !self.stopped => counts.to_plan += plan.setups.len() as u64,
                _ => {}
            }
        }
        counts
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, event: SessionEvent) -> Vec<SessionCommand> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        // Which groups can start changes only when a group ends (or the session starts or
        // stops): an instance's outcome, the common event, does not look at the other groups.
        let may_start = !matches!(event, SessionEvent::Group { .. });
        match event {
            SessionEvent::Start => {
                if let Some(after) = self.timeout {
                    out.push(SessionCommand::Arm {
                        deadline: Deadline::Session,
                        after,
                    });
                }
            }
            SessionEvent::Group { group, event } => {
                if let Event::RetryDue { task, instance, .. } = event {
                    self.waiting.remove(&(group, task, instance));
                }
                let planned = match event {
                    Event::Planned { task, .. } if self.facts.resuming => Some(task),
                    _ => None,
                };
                self.group_event(group, event, &mut out);
                // Resuming: what the previous run's workers stored counts now.
                if let Some(task) = planned.filter(|&t| self.unsettled_task(group, t)) {
                    out.push(SessionCommand::ReadOutcomes { group, task });
                }
            }
            SessionEvent::Deadline(Deadline::Group(group)) => {
                if self.is_running(group) {
                    if let Some(limit) = self.plans[group].timeout {
                        self.errors.push(SessionError::GroupTimedOut {
                            group: self.plans[group].id.clone(),
                            limit,
                        });
                    }
                    self.group_event(group, Event::TimedOut, &mut out);
                }
            }
            SessionEvent::Deadline(Deadline::Session) => {
                if let (false, false, Some(limit)) = (self.stopped, self.exiting, self.timeout) {
                    self.stop(SessionError::TimedOut { limit }, Event::TimedOut, &mut out);
                }
            }
            SessionEvent::Cancel => {
                if !self.stopped && !self.exiting {
                    self.stop(SessionError::Cancelled, Event::Cancelled, &mut out);
                }
            }
            SessionEvent::Pause => self.pause(&mut out),
            SessionEvent::Resume => self.resume(&mut out),
            SessionEvent::WorkLost => self.work_lost(&mut out),
            SessionEvent::Quiet => self.read_back(&mut out),
            SessionEvent::Recorded { range, stored } => self.recorded(range, &stored, &mut out),
        }
        if may_start
            || out
                .iter()
                .any(|command| matches!(command, SessionCommand::Ended { .. }))
        {
            self.start_ready(&mut out);
        }
        out
    }

    fn group_event(&mut self, group: usize, event: Event, out: &mut Vec<SessionCommand>) {
        let Some(GroupSlot::Started(machine)) = self.slots.get_mut(group) else {
            return;
        };
        for command in machine.handle(event) {
            match command {
                Command::Finish { status } => out.push(SessionCommand::Ended { group, status }),
                Command::Dispatch {
                    task,
                    start,
                    end,
                    attempt,
                } => {
                    let range = Range {
                        group,
                        task,
                        start,
                        end,
                        attempt,
                    };
                    self.route(range, out);
                }
                command => {
                    match command {
                        Command::ScheduleRetry { task, instance, .. } => {
                            self.waiting.insert((group, task, instance));
                        }
                        Command::UpdateContext { task } => {
                            self.settled_at.insert((group, task), self.now);
                        }
                        _ => {}
                    }
                    out.push(SessionCommand::Group { group, command });
                }
            }
        }
    }

    /// Whether the task is running with an instance not yet settled.
    fn unsettled_task(&self, group: usize, task: usize) -> bool {
        self.group(group)
            .and_then(|machine| machine.tasks().get(task))
            .is_some_and(|t| t.state == TaskState::Running && t.succeeded + t.failed < t.instances)
    }

    /// Ends the session early: what has not started never will, what runs is stopped.
    fn stop(&mut self, why: SessionError, event: Event, out: &mut Vec<SessionCommand>) {
        self.stopped = true;
        self.errors.push(why);
        for (slot, plan) in self.slots.iter_mut().zip(&self.plans) {
            if matches!(slot, GroupSlot::Waiting) && !plan.on_exit {
                *slot = GroupSlot::Skipped(Skip::Stopped);
            }
        }
        for group in 0..self.slots.len() {
            if self.is_running(group) {
                self.group_event(group, event.clone(), out);
            }
        }
    }

    /// Starts every group whose dependencies completed, skips those with one that did not, and
    /// finishes when every group has ended.
    fn start_ready(&mut self, out: &mut Vec<SessionCommand>) {
        loop {
            let mut changed = false;
            for g in 0..self.slots.len() {
                if !matches!(self.slots[g], GroupSlot::Waiting) || self.plans[g].on_exit {
                    continue;
                }
                let ends: Vec<Option<GroupOutcome>> = self.plans[g]
                    .depends_on
                    .iter()
                    .map(|&d| self.outcome(d))
                    .collect();
                if ends.iter().all(|end| *end == Some(GroupOutcome::Completed)) {
                    self.start_group(g, out);
                    changed = true;
                } else if ends
                    .iter()
                    .any(|end| end.is_some_and(|e| e != GroupOutcome::Completed))
                {
                    self.slots[g] = GroupSlot::Skipped(Skip::Blocked);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let others_ended =
            (0..self.slots.len()).all(|g| self.plans[g].on_exit || self.outcome(g).is_some());
        if others_ended && !self.exiting {
            self.exiting = true;
            let handlers: Vec<usize> = (0..self.plans.len())
                .filter(|&g| self.plans[g].on_exit)
                .collect();
            if !handlers.is_empty() {
                out.push(SessionCommand::WriteContext {
                    key: crate::spec::SESSION_KEY.to_string(),
                    value: self.so_far(),
                });
                for g in handlers {
                    self.start_group(g, out);
                }
            }
        }
        let ended = (0..self.slots.len()).all(|g| self.outcome(g).is_some());
        if ended && !self.finished {
            self.finished = true;
            out.push(SessionCommand::Finish);
        }
    }

    fn start_group(&mut self, g: usize, out: &mut Vec<SessionCommand>) {
        let plan = &self.plans[g];
        let machine = GroupMachine::new(plan.setups.clone(), plan.policy).with_chunk(self.chunk);
        if let Some(after) = plan.timeout {
            out.push(SessionCommand::Arm {
                deadline: Deadline::Group(g),
                after,
            });
        }
        self.slots[g] = GroupSlot::Started(machine);
        out.push(SessionCommand::Started { group: g });
        self.group_event(g, Event::Start, out);
    }
}
