//! The taskgroup crate's error: a session that cannot be read, or one that does not hold together.

use std::fmt;

/// The taskgroup crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// None of these is helped by retrying: the session document has to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Malformed JSON, or JSON that does not fit the session format.
    #[error("line {line}, column {column}: {}{message}", .path.as_ref().map(|p| format!("{p}: ")).unwrap_or_default())]
    Parse {
        /// Line of the problem, from 1.
        line: usize,
        /// Column of the problem, from 1.
        column: usize,
        /// The field path, when the JSON is well-formed but does not fit.
        path: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// Every problem validation found, each with its field path.
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

impl Error {
    /// Every problem, the position of a misfit found in the text kept in its message.
    pub fn into_problems(self) -> Vec<Problem> {
        match self {
            Error::Invalid(problems) => problems,
            Error::Parse {
                line,
                column,
                path,
                message,
            } => vec![Problem {
                path: path.unwrap_or_default(),
                message: format!("{message} (line {line}, column {column})"),
            }],
        }
    }
}

/// One validation problem: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field at fault, e.g. `groups[0].tasks[1].executor`.
    pub path: String,
    /// What is wrong, and how to fix it where that is known.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => write!(f, "invalid session: {one}"),
            many => {
                write!(f, "invalid session, {} problems:", many.len())?;
                for problem in many {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}
