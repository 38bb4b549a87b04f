//! The final result of a session, the same shape everywhere it is printed or stored (`agency
//! run`, `submit --wait`, `status`, `agency:result:{S}`):
//!
//! `{"session_id", "status": "completed" | "partial" | "failed", "context", "groups": {id:
//! {"status", "tasks": {id: {"status", "instances", "succeeded", "failed", "attempts", ...}}}},
//! "errors": [...]}`
//!
//! `completed` means every group completed. Otherwise the result is `partial` when anything
//! succeeded and `failed` when nothing did. Failed instances are listed with their attempts and
//! last error; tasks that were cut short list the results of the instances that did succeed
//! (`results`), or, past their `inline_results` count, a reference to them in the store
//! (`results_kept`).

use crate::failure::FailureKind;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// A session's final result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResult {
    /// The id the session ran under.
    pub session_id: String,
    /// Which run of the id this is the result of: distributed, the position of the action that
    /// started it (`topic/partition/offset`), so a client waiting for its own submission can
    /// tell a later submission's result apart. Absent where nobody can submit the id again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// How the session as a whole ended.
    pub status: ResultStatus,
    /// The shared context as the session left it.
    pub context: Map<String, Value>,
    /// Each group's outcome, in the session's order.
    pub groups: IndexMap<String, GroupSummary>,
    /// What went wrong, one line each, in the order it happened.
    pub errors: Vec<String>,
    /// When the session was submitted (ISO 8601, UTC), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<String>,
    /// When its run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// How long the run took, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The session file's `description`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The session file's `metadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// A rerun of what failed (`agency rerun`, `--retry-failed`): how many instances' successes
    /// were taken from the run before instead of being executed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused: Option<u64>,
}

impl SessionResult {
    /// The result of a session that never ran or could not go on: `failed`, with why.
    pub fn failed(session_id: &str, errors: Vec<String>) -> Self {
        Self::ended(session_id, ResultStatus::Failed, errors)
    }

    /// The result of a session cancelled before it started: nothing ran.
    pub fn cancelled(session_id: &str, errors: Vec<String>) -> Self {
        Self::ended(session_id, ResultStatus::Cancelled, errors)
    }

    fn ended(session_id: &str, status: ResultStatus, errors: Vec<String>) -> Self {
        Self {
            session_id: session_id.to_string(),
            run: None,
            status,
            context: Map::new(),
            groups: IndexMap::new(),
            errors,
            submitted_at: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            description: None,
            metadata: None,
            reused: None,
        }
    }

    /// A copy of everything but the context (left empty, where it stands in the JSON).
    pub fn without_context(&self) -> Self {
        Self {
            session_id: self.session_id.clone(),
            run: self.run.clone(),
            status: self.status,
            context: Map::new(),
            groups: self.groups.clone(),
            errors: self.errors.clone(),
            submitted_at: self.submitted_at.clone(),
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            duration_ms: self.duration_ms,
            description: self.description.clone(),
            metadata: self.metadata.clone(),
            reused: self.reused,
        }
    }

    /// Whether every group completed.
    pub fn completed(&self) -> bool {
        self.status == ResultStatus::Completed
    }

    /// The JSON a user sees, as a value (a copy of the context: for tests and small results).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|error| {
            // Every field is plain data: this cannot fail, but a result is never lost to it.
            serde_json::json!({"session_id": self.session_id, "status": "failed", "errors": [error.to_string()]})
        })
    }
}

/// How a session as a whole ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// Every group completed.
    Completed,
    /// Something succeeded, not everything completed.
    Partial,
    /// Nothing succeeded.
    Failed,
    /// Cancelled before it completed; the results of what completed are kept.
    Cancelled,
}

impl ResultStatus {
    /// The status as it appears in the result JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Partial => "partial",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status of a stored result as JSON; `None` when it has none this version knows.
    pub fn of(result: &serde_json::Value) -> Option<Self> {
        Self::deserialize(result.get("status")?).ok()
    }
}

impl fmt::Display for ResultStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One group's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// How the group ended, or `skipped` when it never started.
    pub status: GroupOutcome,
    /// Each task's outcome, in the group's order.
    pub tasks: IndexMap<String, TaskSummary>,
    /// The group's `name` in the session file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The group's `description` in the session file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// How a group ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupOutcome {
    /// Every task completed (within the failure policy).
    Completed,
    /// The failure policy was exceeded, or a task failed.
    Failed,
    /// The group's or the session's deadline passed.
    TimedOut,
    /// The session was cancelled.
    Cancelled,
    /// Never started: a dependency did not complete, or the session stopped first.
    Skipped,
}

/// One task's outcome and counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// What happened to the task.
    pub status: TaskStatus,
    /// Instances the task expanded to (0 when it never planned).
    pub instances: u64,
    /// Instances that succeeded.
    pub succeeded: u64,
    /// Instances that failed after their last attempt.
    pub failed: u64,
    /// Attempts executed whose outcome arrived (an instance taking a memoized result is
    /// counted in `cached`, not here).
    pub attempts: u64,
    /// Instances not executed: a memoized success of their key (`memoize`) is their result.
    /// Counted among `succeeded`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached: u64,
    /// A task-level error (planning or combining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failed instances with their attempts and last error, by instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<InstanceFailure>,
    /// For a task cut short: the results of the instances that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<InstanceResult>>,
    /// For a task cut short with more instances than its `inline_results` count: instead of
    /// `results`, the reference to them in the store (`{"$results": ...}`, read with `agency
    /// results`; `null` where an instance has no success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results_kept: Option<Value>,
    /// When it was planned and started running (ISO 8601, UTC); absent for a task that never
    /// ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When its last instance settled, or when the session ended for a task cut short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// From `started_at` to `finished_at`, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The task's `name` in the session file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The task's `description` in the session file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TaskSummary {
    /// A task that never ran.
    pub fn skipped() -> Self {
        Self {
            status: TaskStatus::Skipped,
            instances: 0,
            succeeded: 0,
            failed: 0,
            attempts: 0,
            cached: 0,
            error: None,
            failures: Vec::new(),
            results: None,
            results_kept: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            name: None,
            description: None,
        }
    }
}

/// What happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Every instance succeeded and the result is in the context.
    Completed,
    /// Done, with failed instances its group tolerates (a threshold, `continue_on_error`).
    CompletedWithFailures,
    /// The task failed: an instance used up its attempts and its group does not tolerate it
    /// (fail-fast, all-settled, a threshold passed), or planning or combining failed.
    Failed,
    /// Never started.
    Skipped,
    /// Cut short while running: its group timed out or was cancelled, or another task failed it.
    Incomplete,
}

/// A failed instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceFailure {
    /// The instance's index in its task.
    pub instance: u64,
    /// Attempts it had.
    pub attempts: u32,
    /// Its last error.
    pub error: String,
    /// The executor said retrying cannot fix it, so it was not retried.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub permanent: bool,
    /// How its last attempt failed (`timeout`, `exit`, `signal`, `error`, `permanent`,
    /// `cancelled`, `refused`); absent in results of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FailureKind>,
    /// The exit code (`exit`) or signal (`signal`) of its program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// When its last attempt failed (ISO 8601, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<String>,
}

/// A succeeded instance's result, listed for tasks cut short.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceResult {
    /// The instance's index in its task.
    pub instance: u64,
    /// What it returned.
    pub result: Value,
}
