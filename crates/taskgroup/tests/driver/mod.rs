//! A runtime in miniature for the session machine's tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use taskgroup::{
    Command, Deadline, Event, Failure, Range, Rules, Session, SessionCommand, SessionEvent,
    SessionMachine, SessionResult, Stored,
};

pub fn session(doc: Value) -> Session {
    Session::from_json(&doc.to_string(), &Rules::default()).unwrap()
}

pub fn array_task(id: &str, n: u64) -> Value {
    let items: Vec<u64> = (0..n).collect();
    json!({"id": id, "executor": "x", "input": {"xs": items,
        "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}}})
}

/// A runtime in miniature: plans every task to its known instance count, answers each
/// dispatched instance with `outcome(task id, instance, attempt)` (`Err` fails it; `None` leaves
/// it running), makes retries due at once, and records the deadlines armed. Runs until nothing
/// is left to do.
pub struct Driver {
    pub machine: SessionMachine,
    pub session: Session,
    pub armed: Vec<(Deadline, Duration)>,
    pub finished: usize,
    /// Context written by the machine itself, in order.
    pub written: Vec<(String, Value)>,
    /// Groups started, in order.
    pub started: Vec<usize>,
    /// Ranges dispatched, in order.
    pub dispatched: Vec<Range>,
    /// Ranges checked against the store, in order.
    pub checked: Vec<Range>,
    /// What the store holds, by `(task, instance)`, for checks.
    pub stored: HashMap<(usize, u64), Stored>,
    /// Tasks whose stored outcomes were to be read back.
    pub read: Vec<(usize, usize)>,
    /// Pauses (`true`) and resumes sent to workers.
    pub pauses: Vec<bool>,
    /// Retries are kept here, `(group, task, instance, attempt)`, rather than made due at once.
    pub hold_retries: bool,
    pub retries: Vec<(usize, usize, u64, u32)>,
}

pub type Outcome = dyn Fn(&str, u64, u32) -> Option<Result<(), String>>;

impl Driver {
    pub fn new(doc: Value) -> Self {
        let session = session(doc);
        Self {
            machine: SessionMachine::new(&session, 2),
            session,
            armed: Vec::new(),
            finished: 0,
            written: Vec::new(),
            started: Vec::new(),
            dispatched: Vec::new(),
            checked: Vec::new(),
            stored: HashMap::new(),
            read: Vec::new(),
            pauses: Vec::new(),
            hold_retries: false,
            retries: Vec::new(),
        }
    }

    pub fn feed(&mut self, event: SessionEvent, outcome: &Outcome) {
        let mut queue: VecDeque<SessionEvent> = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            for command in self.machine.handle(event) {
                match command {
                    SessionCommand::Arm { deadline, after } => self.armed.push((deadline, after)),
                    SessionCommand::Finish => self.finished += 1,
                    SessionCommand::Started { group } => self.started.push(group),
                    SessionCommand::Ended { .. } => {}
                    SessionCommand::WriteContext { key, value } => self.written.push((key, value)),
                    SessionCommand::Dispatch(range) => {
                        self.dispatched.push(range);
                        let task = &self.session.spec.groups[range.group].tasks[range.task].id;
                        for instance in range.start..range.end {
                            let Some(answered) = outcome(task, instance, range.attempt) else {
                                continue;
                            };
                            // The driver's convention: an error saying "permanent..." is one.
                            let failure = answered.err().map(|error| {
                                if error.starts_with("permanent") {
                                    Failure::permanent(error)
                                } else {
                                    Failure::error(error)
                                }
                            });
                            queue.push_back(SessionEvent::Group {
                                group: range.group,
                                event: Event::outcome(
                                    range.task,
                                    instance,
                                    range.attempt,
                                    failure,
                                    Duration::ZERO,
                                ),
                            });
                        }
                    }
                    SessionCommand::CheckRecorded(range) => {
                        self.checked.push(range);
                        let stored = (range.start..range.end)
                            .map(|instance| self.stored.get(&(range.task, instance)).copied())
                            .collect();
                        queue.push_back(SessionEvent::Recorded { range, stored });
                    }
                    SessionCommand::ReadOutcomes { group, task } => self.read.push((group, task)),
                    SessionCommand::Pause { paused } => self.pauses.push(paused),
                    SessionCommand::Group { group, command } => {
                        let answer = |event| SessionEvent::Group { group, event };
                        match command {
                            Command::Plan { task } => {
                                let instances = self.session.tasks[group][task]
                                    .plan
                                    .instances()
                                    .unwrap_or(1);
                                queue.push_back(answer(Event::Planned {
                                    task,
                                    instances,
                                    format: None,
                                    now: Duration::ZERO,
                                }));
                            }
                            Command::ScheduleRetry {
                                task,
                                instance,
                                attempt,
                                ..
                            } if self.hold_retries => {
                                self.retries.push((group, task, instance, attempt))
                            }
                            Command::ScheduleRetry {
                                task,
                                instance,
                                attempt,
                                ..
                            } => queue.push_back(answer(Event::RetryDue {
                                task,
                                instance,
                                attempt,
                            })),
                            Command::UpdateContext { task } => {
                                queue.push_back(answer(Event::ContextUpdated { task }))
                            }
                            Command::Dispatch { .. } | Command::Cancel | Command::Finish { .. } => {
                            }
                        }
                    }
                }
            }
        }
    }

    pub fn result(&self) -> SessionResult {
        self.machine.result("s", Map::new())
    }
}

pub fn succeed(_: &str, _: u64, _: u32) -> Option<Result<(), String>> {
    Some(Ok(()))
}
