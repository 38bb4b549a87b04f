//! The task manager on a state file, no server (issue 30, finding 18; seed 003's users ran it
//! from a file): `agency tasks` and `agency agent` with `--state PATH`, several processes
//! claiming side by side, each task claimed once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn state_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agency-tasks-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tasks.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

fn agency(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agency"))
        .args(args)
        .arg("--state")
        .arg(state)
        .env_remove("AGENCY_REDIS")
        .output()
        .unwrap()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn processes_claim_tasks_of_a_state_file_each_once() {
    let state = state_file();
    let created: HashSet<String> = (0..24)
        .map(|n| {
            let data = format!("{{\"n\": {n}}}");
            let made = agency(
                &state,
                &[
                    "tasks",
                    "create",
                    "--workflow",
                    "w",
                    "--type",
                    "t",
                    "--data",
                    &data,
                ],
            );
            ok(made).trim().to_string()
        })
        .collect();
    assert_eq!(created.len(), 24);

    // Four agents side by side, each claiming and completing until nothing is left.
    let agents: Vec<_> = (0..4)
        .map(|k| {
            let state = state.clone();
            std::thread::spawn(move || {
                let mut claimed = Vec::new();
                loop {
                    let agent = format!("agent-{k}");
                    let claim = agency(
                        &state,
                        &[
                            "agent",
                            "claim",
                            "--agent",
                            &agent,
                            "--workflow",
                            "w",
                            "--json",
                        ],
                    );
                    if claim.status.code() == Some(3) {
                        return claimed;
                    }
                    let claim: Value = serde_json::from_str(&ok(claim)).unwrap();
                    let token = claim["token"].as_str().unwrap();
                    ok(agency(
                        &state,
                        &["agent", "complete", token, "--result", "1"],
                    ));
                    claimed.push(claim["task"].as_str().unwrap().to_string());
                }
            })
        })
        .collect();
    let mut claimed: Vec<String> = agents
        .into_iter()
        .flat_map(|agent| agent.join().unwrap())
        .collect();
    claimed.sort();
    let unique: HashSet<String> = claimed.iter().cloned().collect();
    assert_eq!(claimed.len(), 24, "each task claimed once: {claimed:?}");
    assert_eq!(unique, created);

    let summary: Value = serde_json::from_str(&ok(agency(
        &state,
        &["tasks", "summary", "--workflow", "w"],
    )))
    .unwrap();
    assert_eq!(summary["status_counts"]["completed"], 24, "{summary:#}");
    let page: Value = serde_json::from_str(&ok(agency(
        &state,
        &[
            "tasks",
            "list",
            "--workflow",
            "w",
            "--status",
            "completed",
            "--limit",
            "5",
        ],
    )))
    .unwrap();
    assert_eq!(page["tasks"].as_array().unwrap().len(), 5);
    assert_eq!(page["next"], 5);
    assert_eq!(page["tasks"][0]["result"], 1);
}
