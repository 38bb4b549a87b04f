//! Redis dropping every connection, again and again, while a distributed session runs: workers
//! wait the outage out instead of dead-lettering or dropping work, the coordinator resumes the
//! session from what was stored, the result is complete and counts each instance once, and a
//! client waiting with `agency submit --wait` gets its result.
//! Alone in its test binary: it kills every Redis client but its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::{redis_url, unique, Cluster};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[test]
fn a_session_survives_redis_dropping_every_connection() {
    let cluster = Cluster::start("outage");
    let id = unique("outage");
    let rows: Vec<u32> = (0..20).collect();
    let cols: Vec<u32> = (0..1000).collect();
    let doc = json!({"session_id": id, "groups": [
        {"id": "cells", "tasks": [{"id": "cells", "executor": "echo", "input": {
            "cell": "{{r}}:{{c}}", "rows": rows, "cols": cols,
            "expansion_config": {"type": "matrix", "array_mapping": {"r": "rows", "c": "cols"}}
        }}]},
        {"id": "after", "depends_on": ["cells"], "tasks": [{"id": "again", "executor": "echo", "input": {
            "x": "{{x}}", "xs": [1, 2, 3], "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}
        }}]}
    ]});
    cluster.submit(&doc);
    // A client waiting with `agency submit --wait` through the same outage.
    let waited_doc = json!({"session_id": unique("outage-waited"), "groups": [{"id": "g", "tasks": [
        {"id": "nap", "executor": "sleep", "input": {"ms": 2000}}
    ]}]});

    let client = redis::Client::open(redis_url()).unwrap();
    let mut redis = client.get_connection().unwrap();
    let result_key = format!("agency:result:{{{id}}}");
    // Drop every other client's connection (normal and pub/sub) every 100 ms for 4 s.
    let mut kills = 0u64;
    let (code, waited) = std::thread::scope(|scope| {
        let waiting = scope.spawn(|| cluster.submit_wait(&waited_doc));
        let outage = Instant::now();
        while outage.elapsed() < Duration::from_secs(4) {
            for kind in ["normal", "pubsub"] {
                let killed: u64 = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg(kind)
                    .query(&mut redis)
                    .unwrap();
                kills += killed;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        waiting.join().unwrap()
    });
    assert!(
        kills > 0,
        "no connection was dropped; the test proves nothing"
    );

    let deadline = Instant::now() + Duration::from_secs(180);
    let result: Value = loop {
        let stored: Option<String> = redis::cmd("GET")
            .arg(&result_key)
            .query(&mut redis)
            .unwrap();
        if let Some(stored) = stored {
            break serde_json::from_str(&stored).unwrap();
        }
        assert!(Instant::now() < deadline, "the session never finished");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(result["status"], "completed", "{:#}", result["errors"]);
    let cells = result["context"]["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 20_000);
    assert_eq!(cells[12_345]["cell"], "12:345");
    assert_eq!(
        result["groups"]["cells"]["tasks"]["cells"]["attempts"],
        20_000
    );
    assert_eq!(result["context"]["again"].as_array().unwrap().len(), 3);
    assert_eq!(code, 0, "{waited:#}");
    assert_eq!(waited["status"], "completed");
}
