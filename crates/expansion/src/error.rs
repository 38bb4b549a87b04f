//! The one error type of the expansion crate: what went wrong, in which task, at which field.

use crate::path::FieldPath;
use std::fmt;

/// The expansion crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An expansion error. It names the task, the field path and, for a rendering error, the instance.
///
/// None of these errors is helped by retrying: they are all about the session's content, except
/// [`ErrorKind::ContextMissing`], which the engine treats as "not known yet" while planning.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct Error {
    /// The task's id.
    pub task: String,
    /// The field at fault, e.g. `groups[1].tasks[0].input.expansion_config.array_mapping.u`.
    pub path: FieldPath,
    /// The instance being rendered, for errors that only show up for one instance.
    pub instance: Option<u64>,
    /// What is wrong.
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

/// What went wrong; the `Display` text is the message users see after the field path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ErrorKind {
    /// A field the format does not have.
    #[error("unknown field `{field}` (expected one of: {})", .allowed.join(", "))]
    UnknownField {
        /// The field found.
        field: String,
        /// The fields allowed there.
        allowed: &'static [&'static str],
    },
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A value of the wrong JSON type.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// The type the field takes.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// A value the format does not accept, with why.
    #[error("{0}")]
    Invalid(String),
    /// A mapping path that does not exist in the task input.
    #[error("`{path}` not found in the task input")]
    NotInInput {
        /// The dotted path that was looked up.
        path: String,
    },
    /// A `context.` reference the session context does not hold (yet).
    #[error("`context.{key}` is not in the session context")]
    ContextMissing {
        /// The dotted path below `context.`.
        key: String,
    },
    /// A template names a variable the expansion does not have.
    #[error("unknown variable `{name}` in template (known: {})", .known.join(", "))]
    UnknownVariable {
        /// The name the template used.
        name: String,
        /// The names it could have used.
        known: Vec<String>,
    },
    /// A template reads a field of a variable that one instance's value lacks.
    #[error("variable `{name}` has no field `{field}`")]
    MissingVariableField {
        /// The variable.
        name: String,
        /// The field below it that the template asked for.
        field: String,
    },
    /// A malformed template.
    #[error("{0}")]
    Template(String),
    /// More instances than the limit allows.
    #[error("expansion would produce {count} instances, over the limit of {limit}")]
    TooManyInstances {
        /// Instances the expansion would produce.
        count: u64,
        /// The most allowed (`Limits::max_instances`).
        limit: u64,
    },
    /// The combination count does not fit in 64 bits.
    #[error("expansion size overflows: {0}")]
    Overflow(String),
    /// The expansion produces no instances and `allow_empty` is not set.
    #[error("expansion is empty: {0} (set \"allow_empty\": true to allow zero instances)")]
    Empty(String),
    /// A result mapped by reference outside the slice read for the instance's range.
    #[error("result {position} of task `{task}` was not read for this range")]
    ResultNotRead {
        /// The task whose results are mapped.
        task: String,
        /// The result's position.
        position: u64,
    },
    /// A rendered instance input is larger than the limit.
    #[error("rendered instance is {size} bytes, over the limit of {limit}")]
    RenderedTooLarge {
        /// The rendered instance's size in bytes.
        size: usize,
        /// The most allowed, in bytes (`Limits::max_rendered_bytes`).
        limit: usize,
    },
}

/// Builds errors for one task without repeating its id everywhere.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    pub task: String,
}

impl Site {
    /// `name` at `at` is none of the expansion's `variables`.
    pub fn unknown_variable(&self, at: &FieldPath, name: &str, variables: &[String]) -> Error {
        self.error(
            at,
            ErrorKind::UnknownVariable {
                name: name.to_string(),
                known: variables.to_vec(),
            },
        )
    }

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
