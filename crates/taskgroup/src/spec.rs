//! The session file as written: a context and task groups of tasks. Parsing is strict (unknown
//! fields are errors) and reports where: line and column for malformed JSON, the field path for
//! wrong types and unknown fields.

use crate::error::{Error, Result};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A session document as written: strict, unknown fields refused.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// The session's id; one is made up when absent.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The shared context; tasks read it with `context.*` and write their results into it.
    #[serde(default)]
    pub context: Map<String, Value>,
    /// The task groups, run in dependency order.
    pub groups: Vec<GroupSpec>,
    /// The whole session's deadline; past it, partial results are published.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// A group of tasks that starts, ends and fails as one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Unique in the session.
    pub id: String,
    /// Groups that must complete before this one starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The group's tasks, run in dependency order.
    pub tasks: Vec<TaskSpec>,
    /// The group's deadline from its start.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// `"fail_fast"` (default), `"all_settled"` or `{"threshold": N}`; see [`crate::FailurePolicy`].
    #[serde(default)]
    pub failure_policy: Option<Value>,
}

/// One task: an executor run over each instance of the task's expansion.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique in the session.
    pub id: String,
    /// The name of the executor that runs each instance (`echo`, `command`, ...).
    pub executor: String,
    /// The input, with templates and the arrays an expansion maps over.
    #[serde(default)]
    pub input: Value,
    /// Tasks of the same group that must complete before this one starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The fan-out, here or (seed style) inside `input`.
    #[serde(default)]
    pub expansion_config: Option<Value>,
    /// The context key the task's combined result is written to; the task id by default.
    #[serde(default)]
    pub result_key: Option<String>,
    /// See [`crate::RetryPolicy`]; no retries when absent.
    #[serde(default)]
    pub retry: Option<Value>,
    /// Deadline of each attempt of each instance.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Failed instances of this task do not fail the group.
    #[serde(default)]
    pub continue_on_error: bool,
    /// At most this many instances of the task run at once (per worker).
    #[serde(default)]
    pub concurrency: Option<u32>,
}

/// The longest session id accepted, in bytes (as Temporal's workflow ids).
pub const MAX_ID_BYTES: usize = 1000;

/// Why `id` cannot name a session, if it cannot. Every Redis key of a session carries its id as
/// a Cluster hash tag (`{id}`), so a brace in it would end the tag early (`}a` gives an empty
/// tag, and the session's keys would spread over slots); an empty id names nothing, and a control
/// character makes keys and logs unreadable.
pub fn session_id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("a session id must not be empty".into());
    }
    if id.contains(['{', '}']) {
        return Some(format!(
            "session id `{id}` must not contain `{{` or `}}` (they delimit the session's Redis hash tag)"
        ));
    }
    if id.len() > MAX_ID_BYTES {
        return Some(format!(
            "a session id is at most {MAX_ID_BYTES} bytes; this one is {} bytes",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Some(format!(
            "session id {id:?} must not contain control characters"
        ));
    }
    None
}

impl TaskSpec {
    /// The context key this task's result is written to.
    pub fn context_key(&self) -> &str {
        self.result_key.as_deref().unwrap_or(&self.id)
    }
}

impl SessionSpec {
    /// Parses a session document. Errors carry line and column, and the field path when the JSON
    /// is well-formed but does not fit the session format.
    pub fn parse(text: &str) -> Result<Self> {
        let spec: Self = parse_all(text)?;
        // A key repeated inside an input or the context would silently take its last value
        // (serde_json's maps do; a JSON parameter rewrote an Argo workflow that way).
        parse_all::<crate::no_duplicates::NoDuplicates>(text)?;
        Ok(spec)
    }
}

/// `text` as one `T` and nothing after it; an error names the line, column and field path.
fn parse_all<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let path = (inner.is_data() && path != ".").then_some(path);
        parse_error(&inner, path)
    })?;
    deserializer
        .end()
        .map_err(|inner| parse_error(&inner, None))?;
    Ok(value)
}

fn parse_error(inner: &serde_json::Error, path: Option<String>) -> Error {
    let (line, column) = (inner.line(), inner.column());
    // serde_json appends the position; it is reported separately, so say it once.
    let message = inner.to_string();
    let suffix = format!(" at line {line} column {column}");
    Error::Parse {
        line,
        column,
        path,
        message: message
            .strip_suffix(&suffix)
            .unwrap_or(&message)
            .to_string(),
    }
}
