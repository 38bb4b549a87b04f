//! The session file as written: a context and task groups of tasks. Parsing is strict (unknown
//! fields are errors) and reports where: line and column for malformed JSON, the field path for
//! wrong types and unknown fields.

use crate::error::{Error, Problem, Result};
use crate::misfit::every_misfit;
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
    /// What the session is for, carried into its status and result.
    #[serde(default)]
    pub description: Option<String>,
    /// Free data about the session (owner, ticket, ...), carried into its status and result.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
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
    /// A name for people, carried into status and the result (the id stays the key).
    #[serde(default)]
    pub name: Option<String>,
    /// What the group does, carried into status and the result.
    #[serde(default)]
    pub description: Option<String>,
    /// An exit handler: runs after every other group has ended, however they ended, and reads
    /// `context._session` (the status and errors so far).
    #[serde(default)]
    pub on_exit: bool,
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
    /// Tasks of the same group this one waits for: a task id waits for the whole task (its
    /// result in the context), `{"task": id, "each": true}` runs instance `i` once instance `i`
    /// of that task succeeded.
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
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
    /// `{"key": "<template>", "ttl_s": N}`: see [`crate::Memoize`].
    #[serde(default)]
    pub memoize: Option<Value>,
    /// `{"count": N, "bytes": B}`: past these, a `separate` task's results stay in the store
    /// and the context holds a reference (see [`crate::InlineResults`]).
    #[serde(default)]
    pub inline_results: Option<Value>,
    /// `{"type": "<agent type>", "claim_timeout_ms": N}` with `"executor": "agent"`: external
    /// agents claim its instances (see [`crate::AgentTask`]).
    #[serde(default)]
    pub agent: Option<Value>,
    /// A name for people, carried into the result (the id stays the key).
    #[serde(default)]
    pub name: Option<String>,
    /// What the task does, carried into the result.
    #[serde(default)]
    pub description: Option<String>,
}

/// One entry of a task's `depends_on`: `"id"`, or `{"task": "id", "each": true}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The task waited for, in the same group.
    pub task: String,
    /// Instance by instance: instance `i` starts as soon as instance `i` of `task` succeeded,
    /// with its result as `{{upstream.<task>}}`, and fails when it failed. Otherwise the whole
    /// task is waited for.
    pub each: bool,
}

impl<'de> Deserialize<'de> for Dependency {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Written {
            task: String,
            #[serde(default)]
            each: bool,
        }
        match Value::deserialize(deserializer)? {
            Value::String(task) => Ok(Self { task, each: false }),
            value @ Value::Object(_) => serde_json::from_value::<Written>(value)
                .map(|written| Self {
                    task: written.task,
                    each: written.each,
                })
                .map_err(D::Error::custom),
            other => Err(D::Error::custom(format!(
                "a dependency is a task id or {{\"task\": \"<id>\", \"each\": true}}, not `{other}`"
            ))),
        }
    }
}

/// The context key exit handlers read the session's status and errors from.
pub const SESSION_KEY: &str = "_session";

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

    /// The ids of the tasks it depends on instance by instance, in `depends_on` order: what its
    /// templates read as `{{upstream.<task>}}`.
    pub fn upstream(&self) -> Vec<String> {
        self.depends_on
            .iter()
            .filter(|d| d.each)
            .map(|d| d.task.clone())
            .collect()
    }
}

impl SessionSpec {
    /// Where task `task` of group `group` sits, `(group index, task index)`, if the session has
    /// it.
    pub fn task_position(&self, group: &str, task: &str) -> Option<(usize, usize)> {
        let g = self.groups.iter().position(|spec| spec.id == group)?;
        let t = self.groups[g]
            .tasks
            .iter()
            .position(|spec| spec.id == task)?;
        Some((g, t))
    }

    /// Parses a session document. Errors carry line and column, and the field path when the JSON
    /// is well-formed but does not fit the session format.
    pub fn parse(text: &str) -> Result<Self> {
        let spec: Self = match parse_all(text) {
            Ok(spec) => spec,
            // Well-formed JSON that does not fit: serde stops at the first misfit, so look for
            // the others too.
            Err(Error::Parse {
                line,
                column,
                path: Some(path),
                message,
            }) => {
                let first = Problem { path, message };
                return Err(match every_misfit(text, first) {
                    Ok(mut problems) => {
                        // Only the first has a position: serde's, in the whole text.
                        problems[0].message += &format!(" (line {line}, column {column})");
                        Error::Invalid(problems)
                    }
                    Err(first) => Error::Parse {
                        line,
                        column,
                        path: Some(first.path),
                        message: first.message,
                    },
                });
            }
            Err(error) => return Err(error),
        };
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
