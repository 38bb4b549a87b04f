//! The errors of a session's run, typed: why it stopped early and what failed in it. Their text
//! is the result's `errors`, one line each.

use std::fmt;
use std::time::Duration;

/// Why the session stopped early, or what went wrong in it: the `errors` of the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// The session was cancelled while it ran.
    Cancelled,
    /// The session's deadline passed.
    TimedOut {
        /// Its `timeout_ms`.
        limit: Duration,
    },
    /// A group's deadline passed.
    GroupTimedOut {
        /// The group's id.
        group: String,
        /// Its `timeout_ms`.
        limit: Duration,
    },
    /// A task could not be planned or combined.
    Task {
        /// The group's id.
        group: String,
        /// The task's id.
        task: String,
        /// Why.
        error: String,
    },
    /// Instances of a task failed.
    Failures {
        /// The group's id.
        group: String,
        /// The task's id.
        task: String,
        /// How many instances failed.
        failed: u64,
        /// The first failed instance.
        instance: u64,
        /// Its attempts.
        attempts: u32,
        /// Its last error.
        error: String,
    },
    /// A group never started because groups it depends on did not complete.
    Skipped {
        /// The group's id.
        group: String,
        /// The ids of the dependencies that did not complete.
        blocked: Vec<String>,
    },
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cancelled => f.write_str("cancelled before the session finished"),
            Self::TimedOut { limit } => {
                write!(f, "session timed out after {} ms", limit.as_millis())
            }
            Self::GroupTimedOut { group, limit } => {
                write!(f, "group `{group}` timed out after {} ms", limit.as_millis())
            }
            Self::Task { group, task, error } => write!(f, "group `{group}` task `{task}`: {error}"),
            Self::Failures {
                group,
                task,
                failed,
                instance,
                attempts,
                error,
            } => write!(
                f,
                "group `{group}` task `{task}`: {} failed; first, instance {instance} after {}: {error}",
                plural(*failed, "instance"),
                plural(u64::from(*attempts), "attempt"),
            ),
            Self::Skipped { group, blocked } => write!(
                f,
                "group `{group}` skipped: {} did not complete",
                blocked.join(", ")
            ),
        }
    }
}

impl std::error::Error for SessionError {}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
