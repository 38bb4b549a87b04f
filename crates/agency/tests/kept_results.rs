//! Results kept by reference, embedded: a `separate` task over its `inline_results` leaves a
//! reference in the context, a downstream fan-out maps over it reading only its slices, `merge`
//! and `single` fold page by page, `agency run` prints the results whole, and `agency results`
//! pages them from a state file (first, middle and last pages; bad ranges refused).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agency::embedded::{run_session, EmbeddedOptions};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Output};

/// 25 numbers kept by reference (over a count of 10); a fan-out over them, their sum and a
/// merge of them, each read back from the store.
fn session(id: &str) -> Value {
    json!({"session_id": id, "groups": [{"id": "g", "tasks": [
        {"id": "numbers", "executor": "echo", "inline_results": {"count": 10},
         "expansion_config": {"type": "range", "range": "1-25", "variable": "n"},
         "input": {"n": "{{n}}"}},
        {"id": "tripled", "executor": "echo", "depends_on": ["numbers"], "inline_results": {"bytes": 200},
         "expansion_config": {"type": "array", "array_mapping": {"item": "context.numbers"}},
         "input": {"of": "{{item.n}}", "at": "{{index}}"}},
        {"id": "sum", "executor": "echo", "depends_on": ["numbers"],
         "expansion_config": {"type": "array", "array_mapping": {"item": "context.numbers"}, "output_format": "single"},
         "input": {"v": "{{item.n}}"}},
        {"id": "merged", "executor": "echo", "depends_on": ["numbers"],
         "expansion_config": {"type": "array", "array_mapping": {"item": "context.numbers"}, "output_format": "merge"},
         "input": {"ns": ["{{item.n}}"]}}
    ]}]})
}

fn reference(task: &str, count: u64) -> Value {
    json!({"$results": {"group": "g", "task": task, "count": count}})
}

#[tokio::test]
async fn a_fan_out_maps_over_results_kept_by_reference() {
    let result = run_session(
        &session("kept-engine").to_string(),
        &EmbeddedOptions::default(),
    )
    .await
    .unwrap();
    assert!(result.completed(), "{:?}", result.errors);
    assert_eq!(result.context["numbers"], reference("numbers", 25));
    // Over 200 bytes of results: by reference too, though within the count.
    assert_eq!(result.context["tripled"], reference("tripled", 25));
    let sum = &result.context["sum"];
    assert_eq!(sum["count"], 25);
    assert_eq!(
        sum["v"],
        json!({"count": 25, "sum": 325, "min": 1, "max": 25, "mean": 13})
    );
    let ns: Vec<u64> = (1..=25).collect();
    // The variable joins each instance's input: the last instance's item stands.
    assert_eq!(
        result.context["merged"],
        json!({"ns": ns, "item": {"n": 25}})
    );
}

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agency-kept-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn agency(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agency"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn agency_run_prints_kept_results_whole_and_agency_results_pages_them() {
    let dir = dir();
    let file = dir.join("kept.json");
    std::fs::write(&file, session("kept-cli").to_string()).unwrap();
    let state = dir.join("kept.db");
    let (file, state) = (file.to_str().unwrap(), state.to_str().unwrap());
    let printed: Value =
        serde_json::from_str(&stdout(&agency(&["run", "-q", "--state", state, file]))).unwrap();
    let numbers: Vec<Value> = (1..=25).map(|n| json!({"n": n})).collect();
    assert_eq!(printed["context"]["numbers"], json!(numbers));
    assert_eq!(
        printed["context"]["tripled"][24],
        json!({"of": 25, "at": 24, "item": {"n": 25}})
    );
    assert_eq!(printed["status"], "completed");

    let page = |args: &[&str]| -> Value {
        let mut all = vec!["results", "kept-cli", "numbers", "--state", state];
        all.extend_from_slice(args);
        serde_json::from_str(&stdout(&agency(&all))).unwrap()
    };
    assert_eq!(
        page(&["--limit", "10"]),
        json!(numbers[..10]),
        "the first page"
    );
    assert_eq!(
        page(&["--from", "10", "--limit", "10"]),
        json!(numbers[10..20]),
        "a middle page"
    );
    assert_eq!(
        page(&["--from", "20", "--limit", "10"]),
        json!(numbers[20..]),
        "the last page, short"
    );
    assert_eq!(page(&[]), json!(numbers), "all of them");
    let lines = stdout(&agency(&[
        "results",
        "kept-cli",
        "g.numbers",
        "--state",
        state,
        "--from",
        "23",
        "--jsonl",
    ]));
    assert_eq!(lines, "{\"n\":24}\n{\"n\":25}\n");

    let refused = |args: &[&str]| {
        let mut all = vec!["results", "kept-cli"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--state", state]);
        stderr(&agency(&all))
    };
    assert!(refused(&["numbers", "--from", "25"])
        .contains("--from 25 is past the last of task `numbers`'s 25 results (positions 0 to 24)"));
    assert!(refused(&["numbers", "--limit", "0"]).contains("--limit must be at least 1"));
    assert!(
        refused(&["sum", "--limit", "3"]).contains("keeps no results of task `sum` in the store")
    );
    assert!(refused(&["other.numbers"]).contains("of group `other`"));
    let unknown = stderr(&agency(&[
        "results",
        "no-such-session",
        "numbers",
        "--state",
        state,
    ]));
    assert!(
        unknown.contains("no session no-such-session is pending, running or has a result"),
        "{unknown}"
    );
}

/// A task cut short (its group's deadline passed) with more instances than its inline count:
/// the result names its results kept in the store instead of listing them, and `agency results`
/// reads them, `null` where an instance did not finish.
#[test]
fn a_task_cut_short_keeps_its_results_by_reference() {
    let dir = dir();
    let file = dir.join("cut.json");
    let session = json!({"session_id": "kept-cut", "groups": [{"id": "g", "timeout_ms": 3000, "tasks": [
        {"id": "slow", "executor": "sleep", "inline_results": {"count": 10},
         "expansion_config": {"type": "range", "range": "1-10,60000-60019", "variable": "ms"},
         "input": {"ms": "{{ms}}"}}
    ]}]});
    std::fs::write(&file, session.to_string()).unwrap();
    let state = dir.join("cut.db");
    let (file, state) = (file.to_str().unwrap(), state.to_str().unwrap());
    let run = agency(&["run", "-q", "--state", state, file]);
    assert_eq!(
        run.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let result: Value = serde_json::from_slice(&run.stdout).unwrap();
    let slow = &result["groups"]["g"]["tasks"]["slow"];
    assert_eq!(slow["results_kept"], reference("slow", 30), "{slow}");
    assert!(slow.get("results").is_none(), "not listed: {slow}");
    let read: Value = serde_json::from_str(&stdout(&agency(&[
        "results", "kept-cut", "slow", "--state", state,
    ])))
    .unwrap();
    let read = read.as_array().unwrap();
    assert_eq!(read.len(), 30);
    assert_eq!(read[0], json!({"slept_ms": 1}));
    assert_eq!(read[9], json!({"slept_ms": 10}));
    assert!(read[10..].iter().all(Value::is_null), "{read:?}");
}
