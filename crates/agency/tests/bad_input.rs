//! The bad-input list B1-B18 of `../shared/research/reliability.md`, one case each: the session
//! document (or message) a user would get wrong, and the error it gets, naming where. The table
//! in `docs/reliability.md` follows these cases; the intake side (dead-lettered, nothing accepted
//! lost) is tested in `tests/distributed.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agency::embedded::{run_session, EmbeddedOptions, Engine};
use events::WorkItem;
use serde_json::{json, Value};

/// The error validating `text` gives, as a user reads it.
fn refused(text: &str) -> String {
    let engine = Engine::new(EmbeddedOptions::default());
    match engine.validate(text) {
        Ok(_) => panic!("expected {text} to be refused"),
        Err(error) => error.to_string(),
    }
}

/// A session of one task with `task`'s fields.
fn one_task(task: Value) -> String {
    let mut spec = json!({"id": "t", "executor": "echo", "input": {}});
    spec.as_object_mut()
        .unwrap()
        .extend(task.as_object().unwrap().clone());
    json!({"groups": [{"id": "g", "tasks": [spec]}]}).to_string()
}

fn assert_names(error: &str, wanted: &[&str]) {
    for part in wanted {
        assert!(error.contains(part), "`{part}` is not in: {error}");
    }
}

#[test]
fn b01_malformed_json_names_line_and_column() {
    assert_names(
        &refused("{\"groups\": [\n  {\"id\": \"g\",, }\n]}"),
        &["line 2, column 14"],
    );
    assert_names(
        &refused("{\"groups\": []} and more"),
        &["line 1, column 16", "trailing characters"],
    );
    assert_names(&refused("{\"groups\": [{\"id\""), &["line 1", "EOF"]);
}

#[test]
fn b02_typos_and_wrong_types_name_the_field_path() {
    assert_names(
        &refused(&one_task(json!({"retires": {"max_retries": 1}}))),
        &["groups[0].tasks[0].retires", "unknown field `retires`"],
    );
    assert_names(
        &refused(&one_task(json!({"retry": {"max_retries": "3"}}))),
        &["groups[0].tasks[0].retry", "max_retries"],
    );
    assert_names(
        &refused(&json!({"groups": [{"id": "g"}]}).to_string()),
        &["groups[0]", "missing field `tasks`"],
    );
}

#[test]
fn b03_a_repeated_key_is_refused_wherever_it_is() {
    assert_names(
        &refused(r#"{"groups": [{"id": "g", "id": "h", "tasks": []}]}"#),
        &["groups[0]", "duplicate field `id`"],
    );
    // In free-form JSON (an input, the context) serde_json would keep the last value.
    let input = r#"{"groups": [{"id": "g", "tasks": [{"id": "t", "executor": "echo", "input": {"url": "https://a", "url": "https://b"}}]}]}"#;
    assert_names(
        &refused(input),
        &[
            "line 1",
            "groups[0].tasks[0].input",
            "key `url` appears twice in one object",
        ],
    );
    let context = r#"{"context": {"user": {"role": "reader", "role": "admin"}}, "groups": [{"id": "g", "tasks": [{"id": "t", "executor": "echo"}]}]}"#;
    assert_names(
        &refused(context),
        &["context.user", "key `role` appears twice"],
    );
}

#[test]
fn b04_deep_nesting_is_refused_without_overflowing_the_stack() {
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let text = format!(
        r#"{{"groups": [{{"id": "g", "tasks": [{{"id": "t", "executor": "echo", "input": {deep}}}]}}]}}"#
    );
    assert_names(&refused(&text), &["recursion limit exceeded"]);
}

#[test]
fn b05_b06_b07_b16_structural_problems_name_both_sides() {
    let task = |id: &str, deps: &[&str]| json!({"id": id, "executor": "echo", "depends_on": deps});
    let error = refused(
        &json!({"groups": [{"id": "g", "tasks": [
            task("a", &["b"]), task("b", &["a"]), task("c", &["nope"]), task("c", &[])
        ]}]})
        .to_string(),
    );
    assert_names(
        &error,
        &[
            "dependency cycle between tasks: a -> b -> a",
            "groups[0].tasks[2].depends_on[0]: unknown task `nope`",
            "groups[0].tasks[3].id: duplicate task id `c` (also groups[0].tasks[2])",
            "context key `c` is also written by task `c`",
        ],
    );
}

#[test]
fn b08_an_unknown_executor_lists_the_known_ones() {
    assert_names(
        &refused(&one_task(json!({"executor": "resize_img"}))),
        &[
            "groups[0].tasks[0].executor",
            "unknown executor `resize_img`",
            "echo",
        ],
    );
}

#[test]
fn b09_a_huge_matrix_is_refused_before_it_is_built() {
    let axis: Vec<u64> = (0..1000).collect();
    let error = refused(&one_task(json!({"input": {
        "a": "{{x}}", "b": "{{y}}", "c": "{{z}}", "xs": axis, "ys": axis, "zs": axis,
        "expansion_config": {"type": "matrix", "array_mapping": {"x": "xs", "y": "ys", "z": "zs"}}
    }})));
    assert_names(
        &error,
        &[
            "groups[0].tasks[0].input.expansion_config",
            "1000000000 instances, over the limit of 10000000",
        ],
    );
}

#[test]
fn b10_an_empty_dimension_is_an_error_unless_allowed() {
    let error = refused(&one_task(json!({"input": {
        "a": "{{x}}", "xs": [],
        "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}
    }})));
    assert_names(
        &error,
        &[
            "groups[0].tasks[0].input.expansion_config",
            "`xs` has no elements (set \"allow_empty\": true",
        ],
    );
}

#[tokio::test]
async fn b11_a_template_in_a_value_stays_data() {
    let text = json!({"context": {"secret": "s3cret", "evil": "{{context.secret}} $(rm -rf /)"},
        "groups": [{"id": "g", "tasks": [{"id": "t", "executor": "echo", "input": {"said": "{{context.evil}}"}}]}]})
    .to_string();
    let result = run_session(&text, &EmbeddedOptions::default())
        .await
        .unwrap()
        .to_json();
    assert_eq!(
        result["context"]["t"],
        json!({"said": "{{context.secret}} $(rm -rf /)"})
    );
}

#[test]
fn b13_absurd_retry_and_timeout_values_name_the_field_and_the_range() {
    assert_names(
        &refused(&one_task(json!({"timeout_ms": -5}))),
        &["groups[0].tasks[0].timeout_ms", "-5"],
    );
    assert_names(
        &refused(&one_task(json!({"timeout_ms": "10s"}))),
        &["groups[0].tasks[0].timeout_ms", "expected u64"],
    );
    assert_names(
        &refused(&one_task(json!({"retry": {"max_retries": 1_000_000_000}}))),
        &["groups[0].tasks[0].retry", "over the limit"],
    );
    assert_names(
        &refused(
            r#"{"groups": [{"id": "g", "tasks": [{"id": "t", "executor": "echo", "timeout_ms": 1e309}]}]}"#,
        ),
        &["line 1", "number out of range"],
    );
}

#[test]
fn b14_ids_that_would_break_store_keys_are_refused() {
    for (id, wanted) in [
        ("", "must not be empty"),
        ("}x", "must not contain `{` or `}`"),
        ("a\u{7}b", "control characters"),
    ] {
        let text = json!({"session_id": id, "groups": [{"id": "g", "tasks": [{"id": "t", "executor": "echo"}]}]});
        assert_names(&refused(&text.to_string()), &["session_id", wanted]);
    }
    let long = "x".repeat(1001);
    let text = json!({"session_id": long, "groups": [{"id": "g", "tasks": [{"id": "t", "executor": "echo"}]}]});
    assert_names(
        &refused(&text.to_string()),
        &["session_id", "1001 bytes", "1000"],
    );
}

#[test]
fn b15_a_message_of_an_unknown_version_says_which_versions_are_spoken() {
    let error = WorkItem::decode(
        br#"{"v": 9, "session": "s", "run": "r", "task": {"group": 0, "task": 0}, "start": 0, "end": 1, "attempt": 1}"#,
    )
    .unwrap_err();
    assert_names(&error, &["version 9 is not supported", "speaks 1"]);
}
