//! Helpers shared by the expansion tests: plan a task input and render every instance.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use expansion::{Error, Expansion, FieldPath, Limits, Task};
use serde_json::{json, Value};

pub fn task_path() -> FieldPath {
    FieldPath::root()
        .key("groups")
        .index(1)
        .key("tasks")
        .index(0)
}

pub fn plan_with(input: &Value, context: &Value, limits: &Limits) -> Result<Expansion, Error> {
    let path = task_path();
    let task = Task {
        id: "t",
        path: &path,
        input,
        expansion_config: None,
        memo_key: None,
        upstream: &[],
    };
    Expansion::plan(task, context, limits)
}

/// Plans a task whose `expansion_config` sits on the task, beside its input.
pub fn plan_task(input: &Value, config: &Value) -> Result<Expansion, Error> {
    let path = task_path();
    let task = Task {
        id: "t",
        path: &path,
        input,
        expansion_config: Some(config),
        memo_key: None,
        upstream: &[],
    };
    Expansion::plan(task, &json!({}), &Limits::default())
}

pub fn plan(input: Value) -> Expansion {
    plan_with(&input, &json!({}), &Limits::default()).unwrap_or_else(|e| panic!("plan failed: {e}"))
}

pub fn render_all(expansion: &Expansion) -> Vec<Value> {
    expansion
        .iter()
        .map(|instance| {
            expansion
                .render(&instance)
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

pub fn expand(input: Value) -> Vec<Value> {
    render_all(&plan(input))
}

pub fn plan_error(input: Value) -> Error {
    plan_error_in(input, json!({}))
}

pub fn plan_error_in(input: Value, context: Value) -> Error {
    match plan_with(&input, &context, &Limits::default()) {
        Ok(expansion) => panic!("expected an error, planned {} instances", expansion.len()),
        Err(error) => error,
    }
}
