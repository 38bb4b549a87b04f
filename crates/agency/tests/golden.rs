//! Golden results: `agency run` on every file in `examples/` gives the same status, context and
//! per-task counts as the recorded ones in `tests/golden/`. A change to what a user sees shows up
//! here first; `AGENCY_BLESS=1 cargo test --test golden` records the new results when the change
//! is intended (say why in the commit).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Context values whose JSON is longer than this are compared by a summary, not in full.
const LARGE: usize = 2_000;

/// The repository's root: examples name their files from there, as a user runs them.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn examples() -> Vec<PathBuf> {
    let dir = root().join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

/// What must not change: the status, the context (large values summarized) and each task's
/// status and counts.
fn summary(result: &Value) -> Value {
    let context: Map<String, Value> = result["context"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, value)| (key.clone(), summarized(value)))
        .collect();
    let groups: Map<String, Value> = result["groups"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, group)| {
            let tasks: Map<String, Value> = group["tasks"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(id, task)| {
                    let counts = ["status", "instances", "succeeded", "failed", "attempts"]
                        .iter()
                        .map(|field| (field.to_string(), task[field].clone()))
                        .collect();
                    (id.clone(), Value::Object(counts))
                })
                .collect();
            (
                id.clone(),
                json!({"status": group["status"], "tasks": tasks}),
            )
        })
        .collect();
    json!({"status": result["status"], "context": context, "groups": groups})
}

fn summarized(value: &Value) -> Value {
    let text = value.to_string();
    if text.len() <= LARGE {
        return value.clone();
    }
    let items = value.as_array();
    json!({"$summary": {
        "bytes": text.len(),
        "items": items.map(Vec::len),
        "first": items.and_then(|a| a.first()),
        "last": items.and_then(|a| a.last()),
    }})
}

#[test]
fn every_example_gives_its_recorded_result() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("AGENCY_BLESS").is_some();
    let mut checked = 0;
    for file in examples() {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        let output = Command::new(env!("CARGO_BIN_EXE_agency"))
            .args(["run", "--quiet"])
            .arg(&file)
            .current_dir(root())
            .output()
            .unwrap();
        let result: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{name}: stdout is not a result ({e}); stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        let got = summary(&result);
        let recorded = golden.join(format!("{name}.json"));
        if bless {
            std::fs::create_dir_all(&golden).unwrap();
            std::fs::write(
                &recorded,
                serde_json::to_string_pretty(&got).unwrap() + "\n",
            )
            .unwrap();
        } else {
            let want: Value = serde_json::from_str(
                &std::fs::read_to_string(&recorded)
                    .unwrap_or_else(|e| panic!("{}: {e}", recorded.display())),
            )
            .unwrap();
            assert_eq!(got, want, "{name}: the result changed");
        }
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} examples found");
}
