//! `agency plan` end to end: the real binary on the examples and on bad files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn agency(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agency"))
        .args(args)
        .output()
        .expect("the agency binary runs")
}

fn plan_json(file: &Path) -> Value {
    let output = agency(&["plan", "--json", file.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("plan --json prints one JSON object")
}

/// Writes `text` to a fresh file for one test.
fn session_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agency-plan-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn failure(file: &Path) -> String {
    let output = agency(&["plan", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "bad files exit 1");
    assert!(output.stdout.is_empty(), "nothing on stdout for a bad file");
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn every_example_plans() {
    let mut planned = 0;
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let report = plan_json(&path);
            assert!(
                report["total_instances"].as_u64().unwrap() > 0,
                "{}",
                path.display()
            );
            planned += 1;
        }
    }
    assert!(planned >= 4);
}

#[test]
fn seed_examples_have_the_expected_counts_and_instances() {
    let matrix = plan_json(&examples().join("seed-matrix.json"));
    assert_eq!(matrix["total_instances"], 6);
    let task = &matrix["groups"][0]["tasks"][0];
    assert_eq!(task["expansion"], "matrix");
    assert_eq!(task["preview"][1]["input"]["cell"], "A2");

    let custom = plan_json(&examples().join("seed-custom.json"));
    assert_eq!(custom["total_instances"], 4);
    assert_eq!(
        custom["groups"][0]["tasks"][0]["preview"][0]["input"]["years"],
        serde_json::json!([2022, 2023])
    );

    assert_eq!(
        plan_json(&examples().join("seed-array.json"))["total_instances"],
        6
    );
}

#[test]
fn a_million_instance_matrix_prints_its_count() {
    let report = plan_json(&examples().join("matrix-1000x1000.json"));
    assert_eq!(report["total_instances"], 1_000_000);
    assert_eq!(
        report["groups"][0]["tasks"][0]["preview"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn deferred_tasks_are_reported() {
    let report = plan_json(&examples().join("pipeline.json"));
    assert_eq!(report["deferred_tasks"], 1);
    assert_eq!(
        report["groups"][2]["tasks"][0]["deferred"]["written_by"],
        "fetch_users"
    );
}

#[test]
fn human_output_shows_counts_and_previews() {
    let output = agency(&[
        "plan",
        examples().join("seed-matrix.json").to_str().unwrap(),
    ]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("task cells [echo] -> context.cells: 6 instances (matrix, output separate)"),
        "{text}"
    );
    assert!(
        text.contains("[0] {\"cell\":\"A1\",\"row\":\"A\",\"col\":1}"),
        "{text}"
    );
    assert!(text.contains("... 3 more"), "{text}");
}

#[test]
fn malformed_json_names_the_file_line_and_column() {
    let file = session_file(
        "broken.json",
        "{\n  \"groups\": [\n    {\"id\": \"g\" \"tasks\": []}\n  ]\n}\n",
    );
    let message = failure(&file);
    assert!(message.starts_with("error: "), "{message}");
    assert!(
        message.contains("broken.json: line 3, column 16: expected `,` or `}`"),
        "{message}"
    );
}

#[test]
fn unknown_fields_missing_arrays_and_wrong_types_are_named() {
    let unknown = session_file("unknown.json", r#"{"groups": [{"id": "g", "taks": []}]}"#);
    assert!(failure(&unknown).contains("groups[0].taks: unknown field `taks`"));

    let missing = session_file(
        "missing.json",
        r#"{"groups": [{"id": "g", "tasks": [{"id": "t", "executor": "echo", "input": {"rows": [1],
            "expansion_config": {"type": "matrix", "array_mapping": {"row": "rows", "col": "cols"}}}}]}]}"#,
    );
    assert!(failure(&missing).contains(
        "groups[0].tasks[0].input.expansion_config.array_mapping.col: task `t`: `cols` not found in the task input"
    ));

    let wrong = session_file(
        "wrong.json",
        r#"{"groups": [{"id": "g", "depends_on": "x", "tasks": []}]}"#,
    );
    assert!(failure(&wrong)
        .contains("groups[0].depends_on: invalid type: string \"x\", expected a sequence"));

    let absent = failure(Path::new("/nonexistent/session.json"));
    assert!(
        absent.contains("cannot read /nonexistent/session.json"),
        "{absent}"
    );
}

#[test]
fn limits_are_flags() {
    let output = agency(&[
        "plan",
        "--max-instances",
        "5",
        examples().join("seed-matrix.json").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8(output.stderr).unwrap();
    assert!(
        message.contains("expansion would produce 6 instances, over the limit of 5"),
        "{message}"
    );
    let usage = agency(&["plan", "--max-instances", "many", "x.json"]);
    assert_eq!(usage.status.code(), Some(2), "usage errors exit 2");
}
