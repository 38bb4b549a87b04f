//! The one way a task is planned. Validation, the coordinator and every worker plan through
//! [`plan_task`], so they agree on a task's instances and on its errors; the coordinator plans
//! again at run time only what validation could not settle ([`Session::settled_plan`]).

use crate::session::{Planned, Session};
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

/// Plans task `(g, t)`, given its id, input, task-level `expansion_config` and memoization
/// key, against `context`. Errors name the task and the field at fault.
pub fn plan_task(
    (g, t): (usize, usize),
    id: &str,
    input: &Value,
    expansion_config: Option<&Value>,
    memo_key: Option<&str>,
    context: &Value,
    limits: &Limits,
) -> expansion::Result<Expansion> {
    let path = task_path(g, t);
    let task = Task {
        id,
        path: &path,
        input,
        expansion_config,
        memo_key,
    };
    Expansion::plan(task, context, limits)
}

impl Session {
    /// Task `(g, t)`'s expansion as validation planned it, when running cannot change it: it
    /// reads no context key that a task of the session writes. `None` means plan it at run time
    /// against the context as it is then.
    pub fn settled_plan(&self, g: usize, t: usize) -> Option<&Expansion> {
        let Planned::Ready(expansion) = &self.tasks.get(g)?.get(t)?.plan else {
            return None;
        };
        let written = self.spec.groups.iter().flat_map(|group| &group.tasks);
        let changes = expansion
            .context_keys()
            .iter()
            .any(|key| written.clone().any(|task| task.context_key() == key));
        (!changes).then_some(expansion.as_ref())
    }
}
