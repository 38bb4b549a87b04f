//! Work that is never done twice, distributed over real Kafka and Redis: memoized instances
//! are not executed again by a later session.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::{unique, Cluster};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

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
    let cluster = Cluster::start("memo");
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
    let cluster = Cluster::start("rerun");
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
