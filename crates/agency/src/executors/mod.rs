//! Executors: the code that runs one instance. A registry maps the names session files use
//! (`"executor": "echo"`) to implementations; users plug in their own programs through `command`.
//!
//! Every call gets a stable idempotency key `(session, group, task, instance, attempt)` and a
//! cancellation token. Executors should stop when it fires; one that does not is still abandoned
//! at its timeout, so it cannot hang its group.

mod allow;
mod builtin;
mod command;
mod http;

use async_trait::async_trait;
use events::Broker;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use taskgroup::Failure;
use tokio_util::sync::CancellationToken;

pub use allow::Allowed;
pub use builtin::{Echo, EmitEvent, Fail, Noop, PrintEvent, Sleep};
pub use command::Command;
pub use http::HttpGet;

/// Identifies one attempt of one instance, the same on every delivery of that attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The session id.
    pub session: Arc<str>,
    /// The group's id.
    pub group: Arc<str>,
    /// The task's id.
    pub task: Arc<str>,
    /// The instance, by index in the task.
    pub instance: u64,
    /// The attempt, from 1.
    pub attempt: u32,
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}/{}",
            self.session, self.group, self.task, self.instance, self.attempt
        )
    }
}

/// One call of an executor.
#[derive(Debug, Clone)]
pub struct Call {
    /// The instance's rendered input (`null` for executors that do not read it).
    pub input: Value,
    /// Names this attempt, the same on every delivery of it.
    pub key: IdempotencyKey,
    /// Fires when the attempt is abandoned (timeout, group cancelled); stop then.
    pub cancel: CancellationToken,
}

/// Why an attempt failed, and whether another attempt can succeed. Its text is the error the
/// result reports. A plain `String` converts to a transient error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// This attempt failed; another may succeed (a server that did not answer, a program that
    /// exited non-zero): the task's retry policy applies.
    #[error("{0}")]
    Transient(String),
    /// No attempt can succeed (the input is wrong, the program does not exist): the instance
    /// fails now, without retries, and its failure says `"permanent": true`.
    #[error("{0}")]
    Permanent(String),
    /// Failed in the way its kind says: a program's exit code or signal, a cancellation. The
    /// retry policy applies unless the kind is permanent.
    #[error("{}", .0.message)]
    Failed(Failure),
}

impl ExecError {
    /// A failure retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }

    /// Whether retrying cannot fix it.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Transient(_) => false,
            Self::Permanent(_) => true,
            Self::Failed(failure) => failure.is_permanent(),
        }
    }

    /// The attempt's failure, as the outcome records it.
    pub fn into_failure(self) -> Failure {
        match self {
            Self::Transient(message) => Failure::error(message),
            Self::Permanent(message) => Failure::permanent(message),
            Self::Failed(failure) => failure,
        }
    }
}

impl From<String> for ExecError {
    fn from(message: String) -> Self {
        Self::Transient(message)
    }
}

impl From<&str> for ExecError {
    fn from(message: &str) -> Self {
        Self::Transient(message.to_string())
    }
}

/// Runs one instance's attempt: the code behind an executor name in session files.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// One line saying what it does, for `agency executors`.
    fn description(&self) -> &str {
        ""
    }

    /// Whether the executor reads its input; when not, instances are not rendered at all.
    fn reads_input(&self) -> bool {
        true
    }

    /// Runs one attempt; an `Err` says why it failed and whether a retry can help.
    async fn execute(&self, call: Call) -> Result<Value, ExecError>;
}

/// Executors by name.
#[derive(Clone, Default)]
pub struct Registry {
    executors: BTreeMap<String, Arc<dyn Executor>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.executors.keys()).finish()
    }
}

impl Registry {
    /// The built-in executors; `emit_event` publishes through `broker`.
    pub fn builtin(broker: Arc<dyn Broker>) -> Self {
        Self::builtin_allowing(broker, Allowed::everything())
    }

    /// The built-in executors, `command` and `http_get` reaching only what `allowed` allows
    /// (a distributed worker's operator says what, `agency worker --allow-command`).
    pub fn builtin_allowing(broker: Arc<dyn Broker>, allowed: Allowed) -> Self {
        let allowed = Arc::new(allowed);
        let mut registry = Self::default();
        registry.register("noop", Noop);
        registry.register("echo", Echo);
        registry.register("sleep", Sleep);
        registry.register("fail", Fail);
        registry.register("http_get", HttpGet::allowing(allowed.clone()));
        registry.register("emit_event", EmitEvent::new(broker));
        registry.register("command", Command::allowing(allowed));
        registry
    }

    /// Adds `executor` under `name`, replacing one of that name.
    pub fn register(&mut self, name: &str, executor: impl Executor) {
        self.executors.insert(name.to_string(), Arc::new(executor));
    }

    /// The executor registered as `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Executor>> {
        self.executors.get(name).cloned()
    }

    /// Every registered name with its description, sorted by name.
    pub fn describe(&self) -> Vec<(String, String)> {
        self.executors
            .iter()
            .map(|(name, executor)| (name.clone(), executor.description().to_string()))
            .collect()
    }

    /// Every registered name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.executors.keys().cloned().collect()
    }
}

/// Reads an optional non-negative integer field of an executor's input; a wrong one is a
/// permanent error (the input will not change on a retry).
pub(crate) fn u64_field(input: &Value, field: &str) -> Result<Option<u64>, ExecError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or_else(|| {
            ExecError::permanent(format!(
                "`{field}` must be a non-negative integer, found {value}"
            ))
        }),
    }
}
