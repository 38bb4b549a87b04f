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
