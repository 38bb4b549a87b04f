//! A session's live state, what `agency status` and `agency watch` show while it runs: its
//! status, instance counts for the session and per group and task, and the times and rate the
//! runtime adds. The shape stored as `agency:{S}:state`:
//!
//! `{"session_id", "run", "status": "pending" | "running" | "paused", "instances": {"total", "succeeded",
//! "failed", "running", "attempts", "retries"}, "groups": {id: {"status", "tasks": {id:
//! {counts}}}}, "submitted_at", "started_at", "updated_at", "rate_per_s", "eta_s"}`
//!
//! Once the session ends its result takes the state's place.

use crate::machine::{TaskRun, TaskState};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// A session that has not ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveState {
    /// The session's id.
    pub session_id: String,
    /// The run this state is of (distributed: the intake action's position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Submitted and waiting for a coordinator, or running.
    pub status: LiveStatus,
    /// Counts over every task planned so far.
    pub instances: LiveCounts,
    /// Each group, in the session's order (empty while pending).
    #[serde(default)]
    pub groups: IndexMap<String, LiveGroup>,
    /// When it was submitted (ISO 8601, UTC), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<String>,
    /// When its run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When this state was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Instances settled per second since the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// Seconds until the instances planned so far are settled, at that rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
    /// The session file's `description`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The session file's `metadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// When each task that started ran, in ms since the run started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<LiveSpan>,
    /// The latest instances that failed after their last attempt (at most [`LATEST_FAILURES`]),
    /// newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<LiveFailure>,
}

/// How many failures a live state shows.
pub const LATEST_FAILURES: usize = 10;

/// When a task ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSpan {
    /// Its group's id.
    pub group: String,
    /// Its id.
    pub task: String,
    /// When it started (was planned), in ms since the run started.
    pub started_ms: u64,
    /// When its last instance settled; `None` while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
}

/// An instance that failed after its last attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveFailure {
    /// Its group's id.
    pub group: String,
    /// Its task's id.
    pub task: String,
    /// Its instance number.
    pub instance: u64,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub error: String,
    /// When its last attempt failed, in ms since the run started.
    pub at_ms: u64,
}

/// Whether a session that has not ended runs yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveStatus {
    /// Submitted; no coordinator runs it yet.
    Pending,
    /// A coordinator runs it.
    Running,
    /// Paused (`agency pause`): nothing new is dispatched or started; what ran was recorded.
    Paused,
}

/// Instance counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveCounts {
    /// Instances planned.
    pub total: u64,
    /// Instances that succeeded.
    pub succeeded: u64,
    /// Instances that failed after their last attempt.
    pub failed: u64,
    /// Instances not settled yet: queued, running or waiting for a retry.
    pub running: u64,
    /// Attempts whose outcome arrived.
    pub attempts: u64,
    /// Attempts that failed and were tried again.
    pub retries: u64,
}

impl LiveCounts {
    pub(crate) fn of(task: &TaskRun) -> Self {
        let settled = task.succeeded + task.failed;
        let running = match task.state {
            TaskState::Running => task.instances.saturating_sub(settled),
            _ => 0,
        };
        Self {
            total: task.instances,
            succeeded: task.succeeded,
            failed: task.failed,
            running,
            attempts: task.attempts,
            retries: task.attempts.saturating_sub(settled),
        }
    }

    pub(crate) fn add(self, other: Self) -> Self {
        Self {
            total: self.total + other.total,
            succeeded: self.succeeded + other.succeeded,
            failed: self.failed + other.failed,
            running: self.running + other.running,
            attempts: self.attempts + other.attempts,
            retries: self.retries + other.retries,
        }
    }
}

/// One group while the session runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveGroup {
    /// Where the group is.
    pub status: LiveGroupStatus,
    /// Each task's counts (tasks not planned yet count 0).
    pub tasks: IndexMap<String, LiveCounts>,
    /// The group's `name` in the session file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Where a group is while the session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveGroupStatus {
    /// Waiting for the groups it depends on.
    Waiting,
    /// Started, not ended.
    Running,
    /// Every task completed.
    Completed,
    /// Its failure policy was exceeded.
    Failed,
    /// Its deadline passed.
    TimedOut,
    /// Cancelled.
    Cancelled,
    /// It will not start.
    Skipped,
}

impl LiveState {
    /// A submitted session no coordinator runs yet.
    pub fn pending(session_id: &str, run: Option<String>) -> Self {
        Self {
            session_id: session_id.to_string(),
            run,
            status: LiveStatus::Pending,
            instances: LiveCounts::default(),
            groups: IndexMap::new(),
            submitted_at: None,
            started_at: None,
            updated_at: None,
            rate_per_s: None,
            eta_s: None,
            description: None,
            metadata: None,
            timeline: Vec::new(),
            failures: Vec::new(),
        }
    }
}

/// `ms` milliseconds since the Unix epoch as an ISO 8601 UTC time,
/// `2026-12-02T06:40:00.123Z` (the proleptic Gregorian calendar, no leap seconds).
pub fn iso8601(ms: u64) -> String {
    let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
    // Howard Hinnant's days-to-civil, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (hours, minutes, seconds, millis) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use super::iso8601;

    #[test]
    fn times_are_written_in_iso_8601() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_796_193_600_123), "2026-12-02T06:40:00.123Z");
    }
}
