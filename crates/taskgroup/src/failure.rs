//! How an attempt failed, as data: its kind (and the exit code or signal of a program) travels
//! with its message from the executor through the worker's outcome, the store and the notice
//! to the machine, the retry rules (`retry.on`, `retry.never_on`) and the result. The message
//! is for people; nothing decides on its text.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What kind of failure an attempt had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The attempt ran past its task's `timeout_ms` (or an agent's claim past its
    /// `claim_timeout_ms`).
    Timeout,
    /// The `command` executor's program exited with a non-zero code (`Failure::code`).
    Exit,
    /// The `command` executor's program was ended by a signal (`Failure::code`).
    Signal,
    /// The executor failed otherwise; another attempt may succeed.
    Error,
    /// The executor said no attempt can succeed (bad input, no such program): never retried.
    Permanent,
    /// The attempt was cancelled before it finished.
    Cancelled,
    /// The store refused the attempt's outcome, which was never recorded.
    Refused,
}

impl FailureKind {
    /// Whether the kind is one `"error"` of `retry.on`/`never_on` names: any failure retrying
    /// might fix but a timeout.
    pub fn is_error(self) -> bool {
        !matches!(self, Self::Timeout | Self::Permanent)
    }
}

/// One failed attempt: its kind, the exit code or signal number of a program, and its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Its kind.
    pub kind: FailureKind,
    /// The exit code (`Exit`) or signal number (`Signal`) of the program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// What happened, for people.
    pub message: String,
}

impl Failure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: None,
            message: message.into(),
        }
    }

    /// A failure another attempt may fix.
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Error, message)
    }

    /// A failure no attempt can fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Permanent, message)
    }

    /// An attempt stopped at its deadline `limit`.
    pub fn timeout(limit: Duration) -> Self {
        Self::new(
            FailureKind::Timeout,
            format!("timed out after {} ms", limit.as_millis()),
        )
    }

    /// A program that exited with `code`, its message ending with what it said on stderr.
    pub fn exit(program: &str, code: i32, stderr: &str) -> Self {
        Self {
            kind: FailureKind::Exit,
            code: Some(code),
            message: format!("`{program}` exited with code {code}: {stderr}"),
        }
    }

    /// A program ended by signal `signal`, with `message`.
    pub fn signal(signal: i32, message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Signal,
            code: Some(signal),
            message: message.into(),
        }
    }

    /// Whether no attempt can fix it.
    pub fn is_permanent(&self) -> bool {
        self.kind == FailureKind::Permanent
    }

    /// The program's exit code, when that is why it failed.
    pub fn exit_code(&self) -> Option<i32> {
        self.code.filter(|_| self.kind == FailureKind::Exit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_carries_its_kind_and_code_whatever_its_message_says() {
        let timeout = Failure::timeout(Duration::from_millis(250));
        assert_eq!(timeout.message, "timed out after 250 ms");
        assert_eq!(timeout.kind, FailureKind::Timeout);
        let exit = Failure::exit("grep", 1, "no match");
        assert_eq!(exit.message, "`grep` exited with code 1: no match");
        assert_eq!((exit.kind, exit.exit_code()), (FailureKind::Exit, Some(1)));
        let signal = Failure::signal(9, "`sleep` ended by signal: 9 (SIGKILL): ");
        assert_eq!(
            (signal.kind, signal.exit_code()),
            (FailureKind::Signal, None)
        );
        // A message that looks like one of the engine's forms is only a message.
        let said = Failure::error("`x` exited with code 2: timed out after 5 ms");
        assert_eq!((said.kind, said.exit_code()), (FailureKind::Error, None));
        assert!(Failure::permanent("bad input").is_permanent());
        assert!(FailureKind::Exit.is_error() && FailureKind::Refused.is_error());
        assert!(!FailureKind::Timeout.is_error() && !FailureKind::Permanent.is_error());
        let encoded = serde_json::to_value(&exit).unwrap_or_default();
        assert_eq!(
            encoded,
            serde_json::json!({"kind": "exit", "code": 1, "message": "`grep` exited with code 1: no match"})
        );
    }
}
