//! What a session machine reports: how each group ended, the run's errors, and the
//! [`SessionResult`] built from its group machines.

use super::{GroupSlot, SessionMachine, Skip};
use crate::machine::{GroupStatus, TaskRun, TaskState};
use crate::result::{
    GroupOutcome, GroupSummary, InstanceFailure, ResultStatus, SessionResult, TaskStatus,
    TaskSummary,
};
use crate::session_error::SessionError;
use serde_json::{Map, Value};

impl SessionMachine {
    /// How the group ended; `None` while it waits or runs.
    pub(super) fn outcome(&self, group: usize) -> Option<GroupOutcome> {
        match &self.slots[group] {
            GroupSlot::Waiting => None,
            GroupSlot::Skipped(_) => Some(GroupOutcome::Skipped),
            GroupSlot::Started(machine) => machine.status().map(|status| match status {
                GroupStatus::Completed => GroupOutcome::Completed,
                GroupStatus::Failed => GroupOutcome::Failed,
                GroupStatus::TimedOut => GroupOutcome::TimedOut,
                GroupStatus::Cancelled => GroupOutcome::Cancelled,
            }),
        }
    }

    /// Tasks cut short after they were planned: `(group, task)`. The results of their
    /// instances that succeeded belong in the result's `results`; the runtime loads them, since
    /// they are in the store, not here. Some may have succeeded that this machine has not heard
    /// of yet (a cancel can come before their notices), so a task is listed even when it
    /// counted none.
    pub fn cut_short(&self) -> Vec<(usize, usize)> {
        (0..self.slots.len())
            .flat_map(|g| {
                self.group(g)
                    .into_iter()
                    .flat_map(|m| m.tasks().iter().enumerate())
                    .filter(|(_, t)| t.cut_short && t.instances > 0)
                    .map(move |(t, _)| (g, t))
            })
            .collect()
    }

    /// Every error of the run so far, in order: stops and timeouts as they happened, then per
    /// group its tasks' errors and failures and why it was skipped.
    pub fn errors(&self) -> Vec<SessionError> {
        let mut errors = self.errors.clone();
        for (g, plan) in self.plans.iter().enumerate() {
            match &self.slots[g] {
                GroupSlot::Started(machine) => {
                    for task in machine.tasks() {
                        errors.extend(task_errors(&plan.id, task));
                    }
                }
                GroupSlot::Skipped(Skip::Blocked) => errors.push(SessionError::Skipped {
                    group: plan.id.clone(),
                    blocked: plan
                        .depends_on
                        .iter()
                        .filter(|&&d| self.outcome(d) != Some(GroupOutcome::Completed))
                        .map(|&d| self.plans[d].id.clone())
                        .collect(),
                }),
                GroupSlot::Skipped(Skip::Stopped) | GroupSlot::Waiting => {}
            }
        }
        errors
    }

    /// How the session stands by its groups other than exit handlers.
    fn status_so_far(&self) -> ResultStatus {
        let regular = || (0..self.plans.len()).filter(|&g| !self.plans[g].on_exit);
        let completed = regular().all(|g| self.outcome(g) == Some(GroupOutcome::Completed));
        let cancelled = self
            .errors
            .iter()
            .any(|error| matches!(error, SessionError::Cancelled));
        let succeeded = regular().any(|g| {
            self.group(g)
                .is_some_and(|machine| machine.tasks().iter().any(|task| task.succeeded > 0))
        });
        if completed {
            ResultStatus::Completed
        } else if cancelled {
            ResultStatus::Cancelled
        } else if succeeded {
            ResultStatus::Partial
        } else {
            ResultStatus::Failed
        }
    }

    /// What exit handlers read as `context._session`: the status the session has so far, its
    /// errors, and how each other group ended.
    pub(super) fn so_far(&self) -> Value {
        let groups: Map<String, Value> = (0..self.plans.len())
            .filter(|&g| !self.plans[g].on_exit)
            .map(|g| {
                let outcome = self.outcome(g).unwrap_or(GroupOutcome::Skipped);
                let outcome = serde_json::to_value(outcome).unwrap_or(Value::Null);
                (self.plans[g].id.clone(), outcome)
            })
            .collect();
        let errors: Vec<Value> = self
            .errors()
            .iter()
            .map(|error| Value::String(error.to_string()))
            .collect();
        serde_json::json!({
            "status": self.status_so_far().as_str(),
            "errors": errors,
            "groups": groups,
        })
    }

    /// The result as things stand, with `context` moved in; `results` of tasks cut short are
    /// left to the runtime (see [`SessionMachine::cut_short`]).
    pub fn result(&self, session_id: &str, context: Map<String, Value>) -> SessionResult {
        let groups = self
            .plans
            .iter()
            .enumerate()
            .map(|(g, plan)| {
                let tasks = plan
                    .setups
                    .iter()
                    .enumerate()
                    .map(|(t, setup)| {
                        let mut summary = match self.group(g) {
                            Some(machine) => {
                                summary(&machine.tasks()[t], machine.tolerates_failures_of(t))
                            }
                            None => TaskSummary::skipped(),
                        };
                        summary.name.clone_from(&plan.task_labels[t].name);
                        summary
                            .description
                            .clone_from(&plan.task_labels[t].description);
                        (setup.id.clone(), summary)
                    })
                    .collect();
                let status = self.outcome(g).unwrap_or(GroupOutcome::Skipped);
                let group = GroupSummary {
                    status,
                    tasks,
                    name: plan.labels.name.clone(),
                    description: plan.labels.description.clone(),
                };
                (plan.id.clone(), group)
            })
            .collect();
        let handler_failed = (0..self.plans.len())
            .any(|g| self.plans[g].on_exit && self.outcome(g) != Some(GroupOutcome::Completed));
        // An exit handler's failure is reported, and never makes the status better.
        let status = match self.status_so_far() {
            ResultStatus::Completed if handler_failed => ResultStatus::Partial,
            status => status,
        };
        SessionResult {
            session_id: session_id.to_string(),
            run: None,
            status,
            context,
            groups,
            errors: self.errors().iter().map(ToString::to_string).collect(),
            submitted_at: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            description: self.description.clone(),
            metadata: self.metadata.clone(),
            reused: None,
        }
    }
}

fn task_errors(group: &str, task: &TaskRun) -> Vec<SessionError> {
    let mut errors = Vec::new();
    if let Some(error) = &task.error {
        errors.push(SessionError::Task {
            group: group.to_string(),
            task: task.setup.id.clone(),
            error: error.clone(),
        });
    }
    if let Some((&instance, first)) = task.failures.iter().next() {
        errors.push(SessionError::Failures {
            group: group.to_string(),
            task: task.setup.id.clone(),
            failed: task.failed,
            instance,
            attempts: first.attempts,
            error: first.failure.message.clone(),
        });
    }
    errors
}

/// The task's summary; `tolerated` says whether its failed instances are (see
/// [`crate::GroupMachine::tolerates_failures_of`]).
fn summary(task: &TaskRun, tolerated: bool) -> TaskSummary {
    let status = match task.state {
        TaskState::Done if task.failed > 0 && tolerated => TaskStatus::CompletedWithFailures,
        TaskState::Done if task.failed > 0 => TaskStatus::Failed,
        TaskState::Done => TaskStatus::Completed,
        TaskState::Failed => TaskStatus::Failed,
        TaskState::Waiting | TaskState::Skipped => TaskStatus::Skipped,
        TaskState::Planning | TaskState::Running | TaskState::Combining => TaskStatus::Incomplete,
    };
    TaskSummary {
        status,
        instances: task.instances,
        succeeded: task.succeeded,
        failed: task.failed,
        attempts: task.attempts,
        cached: 0,
        error: task.error.clone(),
        failures: task
            .failures
            .iter()
            .map(|(&instance, f)| InstanceFailure {
                instance,
                attempts: f.attempts,
                error: f.failure.message.clone(),
                permanent: f.failure.is_permanent(),
                kind: Some(f.failure.kind),
                code: f.failure.code,
                last_attempt_at: None,
            })
            .collect(),
        results: None,
        results_kept: None,
        started_at: None,
        finished_at: None,
        duration_ms: None,
        name: None,
        description: None,
    }
}
