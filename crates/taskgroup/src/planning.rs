//! The one way a task is planned. Validation, the coordinator and every worker plan through
//! [`plan_task`], so they agree on a task's instances and on its errors; the coordinator plans
//! again at run time only what validation could not settle ([`Session::settled_plan`](crate::Session::settled_plan)).

use expansion::{Expansion, FieldPath, Limits, Task};
use serde_json::Value;

/// Where task `t` of group `g` sits in its session document: `groups[g].tasks[t]`.
pub fn task_path(g: usize, t: usize) -> FieldPath {
    FieldPath::root()
        .key("groups")
        .index(g)
        .key("tasks")
        .index(t)
}

/// What planning a task reads of it.
#[derive(Debug, Clone, Copy)]
pub struct TaskPlan<'a> {
    /// The task's id.
    pub id: &'a str,
    /// Its input.
    pub input: &'a Value,
    /// Its task-level `expansion_config`.
    pub expansion_config: Option<&'a Value>,
    /// Its memoization key template.
    pub memo_key: Option<&'a str>,
    /// The tasks it depends on instance by instance, whose results its templates read as
    /// `{{upstream.<task>}}`.
    pub upstream: &'a [String],
}

/// Plans task `(g, t)` against `context`. Errors name the task and the field at fault.
pub fn plan_task(
    (g, t): (usize, usize),
    task: TaskPlan<'_>,
    context: &Value,
    limits: &Limits,
) -> expansion::Result<Expansion> {
    let path = task_path(g, t);
    let task = Task {
        id: task.id,
        path: &path,
        input: task.input,
        expansion_config: task.expansion_config,
        memo_key: task.memo_key,
        upstream: task.upstream,
    };
    Expansion::plan(task, context, limits)
}
