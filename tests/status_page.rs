//! The status page in a real browser: Debian's headless Chromium, driven by playwright-core
//! (`tests/browser/status_page.mjs`), against a coordinator with `--http` and two workers.
//! The page is opened with a token; a session whose fields are markup shows them as text.
//! `scripts/test.sh` installs playwright-core (`npm ci` in `tests/browser`); `scripts/services.sh
//! up` installs Chromium.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::{agency_bin, free_port, unique, wait_for_port, Cluster};
use serde_json::json;
use std::path::Path;
use std::process::Command;

#[test]
fn the_status_page_shows_progress_completion_and_cancels_with_its_button_in_chromium() {
    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: `scripts/services.sh up` installs Debian's chromium"
    );
    let port = free_port();
    let mut cluster = Cluster::start_with("page", &[]);
    // The page is opened with the operator token (its Cancel button needs it).
    let token = "page-operator-token-0123456789";
    cluster.spawn_env(
        "coordinator",
        &["--http", &port.to_string()],
        &[("AGENCY_HTTP_TOKEN", token)],
    );
    cluster.spawn("worker");
    cluster.spawn("worker");
    wait_for_port(port);

    // About 6 s: 120 naps of 200 ms, 2 at a time on each of two workers.
    let naps = |n: u32, ms: u32, id: &str| {
        let ns: Vec<u32> = (0..n).collect();
        json!({"session_id": id, "groups": [{"id": "naps", "tasks": [{"id": "nap", "executor": "sleep",
            "concurrency": 2, "input": {"ms": ms, "ns": ns,
            "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}}]}]})
    };
    let (slow, long) = (unique("slow"), unique("long"));
    let slow_file = cluster.dir.join("slow.json");
    let long_file = cluster.dir.join("long.json");
    std::fs::write(&slow_file, naps(120, 200, &slow).to_string()).unwrap();
    // A long session with failures and a group waiting, to be cancelled (and pictured).
    let mut long_doc = naps(1000, 1000, &long);
    long_doc["groups"][0]["failure_policy"] = json!("all_settled");
    long_doc["groups"][0]["tasks"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "check", "executor": "fail", "retry": {"max_retries": 1, "retry_delays": [100]},
            "input": {"message": "no such row", "ns": [1, 2, 3, 4, 5, 6],
                "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}}));
    long_doc["groups"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "report", "depends_on": ["naps"], "tasks": [{"id": "send", "executor": "echo", "input": "done"}]}));
    std::fs::write(&long_file, long_doc.to_string()).unwrap();
    // A session whose description and failure are markup: shown as text, never run.
    let hostile = unique("hostile");
    let hostile_file = cluster.dir.join("hostile.json");
    let hostile_doc = json!({"session_id": hostile,
        "description": "<script>alert(1)</script><img src=x onerror=alert(2)>",
        "groups": [{"id": "g", "failure_policy": "all_settled", "tasks": [{"id": "bad",
            "executor": "command", "input": {"argv": ["sh", "-c",
                "echo '<img src=x onerror=alert(3)>' >&2; exit 3"]}}]}]});
    std::fs::write(&hostile_file, hostile_doc.to_string()).unwrap();
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/status-page");
    std::fs::create_dir_all(&shots).unwrap();

    let mut node = Command::new("node");
    node.arg(browser.join("status_page.mjs"))
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(agency_bin())
        .arg(&slow_file)
        .arg(&long_file)
        .arg(&hostile_file)
        .arg(&shots)
        .env("AGENCY_PAGE_TOKEN", token);
    // `agency submit` from the script reaches the same deployment as the cluster.
    for (key, value) in cluster.command(&[]).get_envs() {
        if let Some(value) = value {
            node.env(key, value);
        }
    }
    let output = node.output().expect("node runs");
    let said = String::from_utf8_lossy(&output.stdout);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed:\n{said}\n{errors}"
    );
    for expected in [
        format!(r#"{{"saw":"progress changed","session":"{slow}""#),
        format!(r#"{{"saw":"status","session":"{slow}","status":"completed""#),
        format!(r#"{{"saw":"status","session":"{long}","status":"cancelled"}}"#),
        format!(r#"{{"saw":"listed","session":"{long}","status":"cancelled"}}"#),
        format!(r#"{{"saw":"escaped","session":"{hostile}","dialogs":0}}"#),
        r#"{"saw":"requests","elsewhere":0}"#.to_string(),
    ] {
        assert!(said.contains(&expected), "{expected} not in:\n{said}");
    }
    // What the page showed is what the store holds.
    let status = cluster
        .command(&["status", &long, "--json"])
        .output()
        .unwrap();
    let result: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(result["status"], "cancelled");
    assert!(shots.join("status-session.png").is_file() && shots.join("status-list.png").is_file());
}
