//! Work that is never done twice, distributed over real Kafka and Redis: memoized instances
//! are not executed again by a later session, a rerun executes only what failed, a paused
//! session starts nothing until it is resumed. One worker per test, so no rebalance between
//! workers delivers a range twice (at least once is the rule then) and the counts are exact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::{unique, Cluster};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

const ONE_WORKER: &[&str] = &["coordinator", "worker"];

/// How often each instance number was executed, from the lines the programs appended.
fn executions(log: &Path) -> HashMap<u64, u32> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *counts.entry(line.trim().parse().unwrap()).or_default() += 1;
    }
    counts
}

#[test]
fn a_later_session_takes_memoized_results_from_redis_and_executes_nothing() {
    let cluster = Cluster::start_with("memo", ONE_WORKER);
    let log = std::env::temp_dir().join(unique("memo-log"));
    let prefix = unique("cube");
    let session = |id: &str| {
        json!({"session_id": id, "groups": [{"id": "g", "tasks": [
            {"id": "cubes", "executor": "command", "memoize": {"key": format!("{prefix}-{{{{n}}}}")},
             "input": {
                "argv": ["sh", "-c", format!("echo $0 >> {}; echo $(($0 * $0 * $0))", log.display()), "{{n}}"],
                "expansion_config": {"type": "range", "range": "1-30", "variable": "n"}
            }}
        ]}]})
    };
    let (code, first) = cluster.submit_wait(&session(&unique("first")));
    assert_eq!(code, 0, "{first:#}");
    assert_eq!(executions(&log).len(), 30);
    let (code, second) = cluster.submit_wait(&session(&unique("second")));
    assert_eq!(code, 0, "{second:#}");
    let task = &second["groups"]["g"]["tasks"]["cubes"];
    assert_eq!(task["cached"], 30, "{task:#}");
    assert_eq!(second["context"]["cubes"], first["context"]["cubes"]);
    assert_eq!(second["context"]["cubes"][2], 27);
    assert!(
        executions(&log).values().all(|&runs| runs == 1),
        "the second session executed nothing"
    );

    let cleared = cluster
        .command(&["cache", "clear", "--prefix", &format!("{prefix}-2")])
        .output()
        .unwrap();
    assert!(cleared.status.success());
    assert!(
        String::from_utf8_lossy(&cleared.stdout).starts_with("removed 11 memoized results"),
        "{}",
        String::from_utf8_lossy(&cleared.stdout)
    );
    let (_, third) = cluster.submit_wait(&session(&unique("third")));
    assert_eq!(third["groups"]["g"]["tasks"]["cubes"]["cached"], 19);
    let counts = executions(&log);
    assert_eq!(counts[&2], 2);
    assert_eq!(counts[&25], 2);
    assert_eq!(counts[&3], 1);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn agency_rerun_executes_only_what_failed_and_completes() {
    let cluster = Cluster::start_with("rerun", ONE_WORKER);
    let log = std::env::temp_dir().join(unique("rerun-log"));
    let flag = std::env::temp_dir().join(unique("rerun-flag"));
    let script = format!(
        "echo $0 >> {log}; if [ $(($0 % 4)) = 0 ] && [ ! -f {flag} ]; then exit 2; fi; echo $0",
        log = log.display(),
        flag = flag.display()
    );
    let id = unique("rerun");
    let doc = json!({"session_id": id, "groups": [
        {"id": "g", "failure_policy": "all_settled", "tasks": [{"id": "items", "executor": "command",
            "input": {"argv": ["sh", "-c", script, "{{n}}"],
                      "expansion_config": {"type": "range", "range": "1-24", "variable": "n"}}}]},
        {"id": "after", "depends_on": ["g"], "tasks": [
            {"id": "all", "executor": "echo", "input": {"items": "{{context.items}}"}}
        ]}
    ]});
    let (code, first) = cluster.submit_wait(&doc);
    assert_eq!(code, 1);
    assert_eq!(first["status"], "partial", "{first:#}");
    assert_eq!(first["groups"]["g"]["tasks"]["items"]["failed"], 6);

    // Nothing to rerun for a session nobody ran.
    let unknown = cluster
        .command(&["rerun", &unique("nobody")])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("has no result to rerun"));

    std::fs::write(&flag, "").unwrap();
    let rerun = cluster
        .command(&["rerun", &id, "--wait", "--timeout", "120"])
        .output()
        .unwrap();
    assert_eq!(
        rerun.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&rerun.stdout).unwrap();
    assert_eq!(result["status"], "completed", "{result:#}");
    assert_eq!(result["reused"], 18);
    assert_ne!(result["run"], first["run"], "a run of its own");
    assert_eq!(
        result["context"]["all"]["items"],
        json!((1..=24).collect::<Vec<u64>>())
    );
    let counts = executions(&log);
    for n in 1..=24u64 {
        let expected = if n % 4 == 0 { 2 } else { 1 };
        assert_eq!(counts[&n], expected, "instance {n}: {counts:?}");
    }

    // Completed now: nothing to rerun, and its working state is gone.
    let again = cluster.command(&["rerun", &id]).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr)
            .contains("completed: nothing failed, nothing to rerun"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&flag);
}

/// The session's live status, as `agency status --json` prints it.
fn live_status(cluster: &Cluster, id: &str) -> String {
    let output = cluster.command(&["status", id, "--json"]).output().unwrap();
    let state: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    state["status"].as_str().unwrap_or("").to_string()
}

/// Outcomes recorded so far for the session's first task.
fn recorded(id: &str) -> u64 {
    let client = redis::Client::open(integration_tests::redis_url()).unwrap();
    let mut redis = client.get_connection().unwrap();
    redis::cmd("HLEN")
        .arg(format!("agency:{{{id}}}:outcomes:0:0"))
        .query(&mut redis)
        .unwrap()
}

#[test]
fn a_paused_session_starts_nothing_and_resumed_it_completes_with_each_instance_run_once() {
    let cluster = Cluster::start_with("pause", ONE_WORKER);
    let log = std::env::temp_dir().join(unique("pause-log"));
    let id = unique("pause");
    let doc = json!({"session_id": id, "groups": [{"id": "g", "tasks": [
        {"id": "naps", "executor": "command", "concurrency": 4, "input": {
            "argv": ["sh", "-c", format!("echo $0 >> {}; sleep 0.1; echo 1", log.display()), "{{n}}"],
            "expansion_config": {"type": "range", "range": "0-399", "variable": "n"}
        }}
    ]}]});
    cluster.submit(&doc);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while recorded(&id) < 40 {
        assert!(std::time::Instant::now() < deadline, "never got going");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let paused = cluster.command(&["pause", &id]).output().unwrap();
    assert!(
        paused.status.success(),
        "{}",
        String::from_utf8_lossy(&paused.stderr)
    );
    while live_status(&cluster, &id) != "paused" {
        assert!(std::time::Instant::now() < deadline, "never paused");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // What was running when the pause arrived finishes (naps of 100 ms); then nothing moves.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let before = recorded(&id);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let after = recorded(&id);
    assert_eq!(before, after, "nothing was started while paused");
    assert!(after < 400, "paused before the end: {after} recorded");
    let at_pause = executions(&log);
    assert_eq!(at_pause.len() as u64, after, "every execution was recorded");

    let resumed = cluster.command(&["resume", &id]).output().unwrap();
    assert!(resumed.status.success());
    let watched = cluster
        .command(&["watch", &id, "--timeout", "120"])
        .output()
        .unwrap();
    assert_eq!(
        watched.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&watched.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&watched.stdout).unwrap();
    let task = &result["groups"]["g"]["tasks"]["naps"];
    assert_eq!(result["status"], "completed", "{result:#}");
    assert_eq!(
        (task["succeeded"].clone(), task["attempts"].clone()),
        (json!(400), json!(400))
    );
    // What ran before the pause did not run again; the rest ran once. (A range delivered again
    // by a rebalance before the pause may have run an instance twice then: at least once.)
    let counts = executions(&log);
    assert_eq!(counts.len(), 400);
    for (n, &runs) in &counts {
        let expected = at_pause.get(n).copied().unwrap_or(1);
        assert_eq!(
            runs, expected,
            "instance {n}: {runs} runs, {expected} expected"
        );
    }
    let again = cluster.command(&["pause", &id]).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr)
        .contains("has already finished (completed); nothing to pause"));
    let _ = std::fs::remove_file(&log);
}
