//! `agency run` end to end: the real binary, its output, exit codes, progress and Ctrl-C.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn session_file(name: &str, doc: &Value) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agency-run-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

fn agency_run(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agency"))
        .arg("run")
        .arg(file)
        .output()
        .unwrap()
}

fn result_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn a_completed_session_prints_its_result_and_exits_0() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let output = agency_run(&examples.join("pipeline.json"));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result = result_of(&output);
    assert_eq!(result["status"], "completed");
    assert_eq!(result["session_id"], "pipeline");
    assert_eq!(
        result["context"]["notifications"][1]["message"],
        "hi Bob from team edge"
    );
    assert_eq!(
        result["groups"]["grid"]["tasks"]["region_quarters"]["instances"],
        11
    );
}

#[test]
fn a_failed_session_prints_partial_results_and_exits_1() {
    let file = session_file(
        "partial.json",
        &json!({"groups": [
            {"id": "ok", "tasks": [{"id": "fine", "executor": "echo", "input": 1}]},
            {"id": "bad", "tasks": [{"id": "broken", "executor": "fail", "input": {"times": 5}}]}
        ]}),
    );
    let output = agency_run(&file);
    assert_eq!(output.status.code(), Some(1));
    let result = result_of(&output);
    assert_eq!(result["status"], "partial");
    assert_eq!(result["context"]["fine"], 1);
    assert_eq!(result["groups"]["bad"]["status"], "failed");
}

#[test]
fn an_invalid_session_exits_1_before_running_anything() {
    let file = session_file(
        "invalid.json",
        &json!({"groups": [{"id": "g", "tasks": [{"id": "t", "executor": "teleport"}]}]}),
    );
    let output = agency_run(&file);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("groups[0].tasks[0].executor: unknown executor `teleport`"),
        "{stderr}"
    );
}

#[test]
fn progress_is_printed_as_lines_when_stderr_is_not_a_terminal() {
    let file = session_file(
        "slow.json",
        &json!({"groups": [{"id": "g", "tasks": [
            {"id": "nap", "executor": "sleep", "input": {"ms": 2600}}
        ]}]}),
    );
    let output = agency_run(&file);
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("progress: 0/1 instances, 0/s, ETA ?"),
        "{stderr}"
    );
}

#[test]
fn ctrl_c_cancels_and_prints_partial_results() {
    let file = session_file(
        "interrupted.json",
        &json!({"groups": [
            {"id": "first", "tasks": [{"id": "quick", "executor": "echo", "input": 1}]},
            {"id": "second", "depends_on": ["first"], "tasks": [{"id": "nap", "executor": "sleep", "input": {"ms": 60000}}]}
        ]}),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_agency"))
        .args(["run", "--quiet"])
        .arg(&file)
        .env("AGENCY_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the second group runs (so the first completed), then interrupt it as a
    // terminal's Ctrl-C would.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !(line.contains("starting group") && line.contains("second")) {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0,
            "agency exited before starting the group"
        );
    }
    let started = Instant::now();
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "Ctrl-C did not stop the run"
    );
    assert_eq!(status.code(), Some(130));
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let result: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(result["status"], "cancelled");
    assert_eq!(result["context"]["quick"], 1);
    assert_eq!(result["errors"][0], "cancelled before the session finished");
}

#[test]
fn only_runs_a_selection_and_what_it_depends_on() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/selection.json");
    let only = |selection: &str| {
        Command::new(env!("CARGO_BIN_EXE_agency"))
            .args(["run", "--only", selection])
            .arg(&example)
            .output()
            .unwrap()
    };
    let output = only("report");
    assert_eq!(output.status.code(), Some(0));
    let result = result_of(&output);
    let groups: Vec<&String> = result["groups"].as_object().unwrap().keys().collect();
    assert_eq!(
        groups,
        ["prepare", "report"],
        "report needs prepare, not extra"
    );
    assert_eq!(result["context"]["summary"]["ids"][5]["task_id"], 10);
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("--only report: running 2 of 3 groups: prepare, report"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let result = result_of(&only("prepare.selected,extra"));
    let tasks: Vec<&String> = result["groups"]["prepare"]["tasks"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(tasks, ["selected"], "audit is left out");
    assert_eq!(
        result["groups"]["extra"]["tasks"]["spot_checks"]["instances"],
        3
    );

    let output = only("prepare.audit");
    let result = result_of(&output);
    let tasks: Vec<&String> = result["groups"]["prepare"]["tasks"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(tasks, ["selected", "audit"], "audit depends on selected");

    let output = only("report.nope");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("--only `report.nope`: group `report` has no task `nope` (tasks: summary)"));
    assert!(output.stdout.is_empty(), "nothing ran");
}

/// Seed 001's `emit_event` is seen in an embedded run: its line on stderr, as `agency csv`
/// prints it (issue 30, finding 12).
#[test]
fn emit_event_prints_its_line_in_an_embedded_run() {
    let file = session_file(
        "emit.json",
        &json!({"session_id": "emit", "groups": [{"id": "g", "tasks": [{"id": "say",
            "executor": "emit_event", "input": {"n": "{{n}}", "ns": [1, 2],
                "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}}]}]}),
    );
    let output = agency_run(&file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let mut events: Vec<&str> = stderr.lines().filter(|l| l.starts_with("event ")).collect();
    events.sort_unstable();
    assert_eq!(
        events,
        [
            "event emit/g/say/0/1 {\"n\":1}",
            "event emit/g/say/1/1 {\"n\":2}"
        ],
        "{stderr}"
    );
    assert_eq!(
        result_of(&output)["context"]["say"],
        json!([{"n": 1}, {"n": 2}])
    );
}
