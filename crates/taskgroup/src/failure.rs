//! What kind of failure an attempt's error is, read back from the error itself: the engine writes
//! the errors of a timed-out attempt and of a program's non-zero exit in the fixed forms made
//! here, so `retry.on` and `retry.never_on` can tell them apart wherever the error travels
//! (a worker's outcome, the store, a notice) without a field of their own.

use std::time::Duration;

/// How an attempt failed, as `retry.on` and `retry.never_on` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The attempt ran past the task's `timeout_ms`.
    Timeout,
    /// Any other failure retrying might fix.
    Error,
    /// The executor said retrying cannot fix it.
    Permanent,
}

/// The facts of one failed attempt that retry conditions look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureFacts<'a> {
    /// Its kind.
    pub kind: FailureKind,
    /// The exit code of the `command` executor's program, when that is why it failed.
    pub exit_code: Option<i32>,
    /// The error.
    pub message: &'a str,
}

const TIMED_OUT: &str = "timed out after ";
const EXITED: &str = "` exited with code ";

/// The error of an attempt stopped at its deadline.
pub fn timeout_error(limit: Duration) -> String {
    format!("{TIMED_OUT}{} ms", limit.as_millis())
}

/// The error of a program that exited with `code`, ending with what it said on stderr.
pub fn exit_error(program: &str, code: i32, stderr: &str) -> String {
    format!("`{program}{EXITED}{code}: {stderr}")
}

impl<'a> FailureFacts<'a> {
    /// Reads an attempt's error.
    pub fn of(message: &'a str, permanent: bool) -> Self {
        let kind = if permanent {
            FailureKind::Permanent
        } else if message.starts_with(TIMED_OUT) {
            FailureKind::Timeout
        } else {
            FailureKind::Error
        };
        Self {
            kind,
            exit_code: exit_code(message),
            message,
        }
    }
}

fn exit_code(message: &str) -> Option<i32> {
    if !message.starts_with('`') {
        return None;
    }
    let (_, after) = message.split_once(EXITED)?;
    let (code, _) = after.split_once(':')?;
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_written_are_the_forms_read() {
        let timeout = timeout_error(Duration::from_millis(250));
        assert_eq!(timeout, "timed out after 250 ms");
        assert_eq!(FailureFacts::of(&timeout, false).kind, FailureKind::Timeout);
        let exit = exit_error("grep", 1, "no match");
        assert_eq!(exit, "`grep` exited with code 1: no match");
        let facts = FailureFacts::of(&exit, false);
        assert_eq!((facts.kind, facts.exit_code), (FailureKind::Error, Some(1)));
        assert_eq!(
            FailureFacts::of(&exit_error("x", -3, ""), false).exit_code,
            Some(-3)
        );
        let other = FailureFacts::of("GET http://h returned 503", false);
        assert_eq!((other.kind, other.exit_code), (FailureKind::Error, None));
        assert_eq!(
            FailureFacts::of("said `x` exited with code 2: no", false).exit_code,
            None,
            "only the engine's own form at the start counts"
        );
        assert_eq!(
            FailureFacts::of(&timeout, true).kind,
            FailureKind::Permanent
        );
    }
}
