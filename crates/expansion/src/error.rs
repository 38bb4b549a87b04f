//! The one error type of the expansion crate: what went wrong, in which task, at which field.

use crate::path::FieldPath;
use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An expansion error. It names the task, the field path and, for a rendering error, the instance.
///
/// None of these errors is helped by retrying: they are all about the session's content, except
/// [`ErrorKind::ContextMissing`], which the engine treats as "not known yet" while planning.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct Error {
    pub task: String,
    pub path: FieldPath,
    /// The instance being rendered, for errors that only show up for one instance.
    pub instance: Option<u64>,
    pub kind: ErrorKind,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task `{}`", self.task)?;
        if let Some(instance) = self.instance {
            write!(f, " instance {instance}")?;
        }
        write!(f, " at {}: {}", self.path, self.kind)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ErrorKind {
    #[error("unknown field `{field}` (expected one of: {})", .allowed.join(", "))]
    UnknownField {
        field: String,
        allowed: &'static [&'static str],
    },
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("`{path}` not found in the task input")]
    NotInInput { path: String },
    /// A `context.` reference the session context does not hold (yet).
    #[error("`context.{key}` is not in the session context")]
    ContextMissing { key: String },
    #[error("unknown variable `{name}` in template (known: {})", .known.join(", "))]
    UnknownVariable { name: String, known: Vec<String> },
    #[error("variable `{name}` has no field `{field}`")]
    MissingVariableField { name: String, field: String },
    #[error("{0}")]
    Template(String),
    #[error("expansion would produce {count} instances, over the limit of {limit}")]
    TooManyInstances { count: u64, limit: u64 },
    #[error("expansion size overflows: {0}")]
    Overflow(String),
    #[error("expansion is empty: {0} (set \"allow_empty\": true to allow zero instances)")]
    Empty(String),
    #[error("rendered instance is {size} bytes, over the limit of {limit}")]
    RenderedTooLarge { size: usize, limit: usize },
}

/// Builds errors for one task without repeating its id everywhere.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    pub task: String,
}

impl Site {
    pub fn error(&self, path: &FieldPath, kind: ErrorKind) -> Error {
        Error {
            task: self.task.clone(),
            path: path.clone(),
            instance: None,
            kind,
        }
    }

    pub fn invalid(&self, path: &FieldPath, message: impl Into<String>) -> Error {
        self.error(path, ErrorKind::Invalid(message.into()))
    }
}
