//! The control plane against real Kafka and Redis: cancelling a running session (through
//! `agency cancel`, which produces a cancel action, and through the store mark another
//! coordinator would write), and what cancelling an unknown or finished session answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::{redis_url, unique, Cluster};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A million naps of 50 ms, 64 at a time per worker: hours of work for two workers.
fn million_naps(id: &str) -> Value {
    let axis: Vec<u32> = (0..1000).collect();
    json!({"session_id": id, "groups": [
        {"id": "g", "tasks": [{"id": "naps", "executor": "sleep", "concurrency": 64, "input": {
            "ms": 50, "rows": axis, "cols": axis,
            "expansion_config": {"type": "matrix", "array_mapping": {"r": "rows", "c": "cols"}}
        }}]},
        {"id": "after", "depends_on": ["g"], "tasks": [{"id": "never", "executor": "echo", "input": 1}]}
    ]})
}

/// Waits until session `id`'s first task has `count` outcomes recorded.
fn wait_for_outcomes(redis: &mut redis::Connection, id: &str, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while redis::cmd("HLEN")
        .arg(format!("agency:{{{id}}}:outcomes:0:0"))
        .query::<u64>(redis)
        .unwrap()
        < count
    {
        assert!(Instant::now() < deadline, "session {id} never got going");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A cancelled result of the million naps: what completed is kept and counted, nothing runs
/// after it, and the dependent group never started.
fn check_cancelled(result: &Value) -> u64 {
    assert_eq!(result["status"], "cancelled", "{result:#}");
    assert_eq!(result["groups"]["g"]["status"], "cancelled");
    assert_eq!(result["groups"]["after"]["status"], "skipped");
    let task = &result["groups"]["g"]["tasks"]["naps"];
    let succeeded = task["succeeded"].as_u64().unwrap();
    assert!(
        (1..1_000_000).contains(&succeeded),
        "{succeeded} of 1,000,000 completed"
    );
    assert_eq!(
        task["results"].as_array().unwrap().len() as u64,
        succeeded,
        "the results of what completed are kept"
    );
    assert_eq!(
        result["errors"][0], "cancelled before the session finished",
        "{result:#}"
    );
    succeeded
}

/// The workers are free again: a small session submitted after the cancel completes, though
/// the cancelled run left most of its million instances queued.
fn check_workers_free(cluster: &Cluster) {
    let doc = json!({"session_id": unique("after-cancel"), "groups": [{"id": "g", "tasks": [
        {"id": "hello", "executor": "echo", "input": {"hi": 1}}]}]});
    let started = Instant::now();
    let (code, result) = cluster.submit_wait(&doc);
    assert_eq!((code, &result["status"]), (0, &json!("completed")));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the next session waited {:?} behind the cancelled one",
        started.elapsed()
    );
}

#[test]
fn agency_cancel_ends_a_million_instance_fan_out_with_what_completed() {
    let cluster = Cluster::start("cancel");
    let client = redis::Client::open(redis_url()).unwrap();
    let mut redis = client.get_connection().unwrap();
    let id = unique("cancel");
    cluster.submit(&million_naps(&id));
    wait_for_outcomes(&mut redis, &id, 2_000);

    let asked = Instant::now();
    let cancelled = cluster
        .command(&["cancel", &id, "--wait", "--timeout", "60"])
        .output()
        .unwrap();
    let took = asked.elapsed();
    assert_eq!(
        cancelled.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&cancelled.stderr)
    );
    let result: Value = serde_json::from_slice(&cancelled.stdout).unwrap();
    check_cancelled(&result);
    assert!(took < Duration::from_secs(30), "the cancel took {took:?}");
    let stored: Value = serde_json::from_str(
        &redis::cmd("GET")
            .arg(format!("agency:result:{{{id}}}"))
            .query::<String>(&mut redis)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored, result, "the stored result is the cancelled one");
    check_workers_free(&cluster);

    // Cancelling it again, or a session nobody submitted, changes nothing and says why.
    let again = cluster.command(&["cancel", &id]).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        said.contains("has already finished (cancelled); nothing to cancel"),
        "{said}"
    );
    let unknown = cluster
        .command(&["cancel", &unique("nobody")])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(said.contains("is running or has a result"), "{said}");
    let unchanged: String = redis::cmd("GET")
        .arg(format!("agency:result:{{{id}}}"))
        .query(&mut redis)
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&unchanged).unwrap(), result);
}

/// A cancel that reaches the session's coordinator through the store, as one taken by another
/// coordinator does: the mark on the session's current run.
#[test]
fn a_cancel_marked_in_the_store_reaches_the_coordinator_running_the_session() {
    let cluster = Cluster::start("store-cancel");
    let client = redis::Client::open(redis_url()).unwrap();
    let mut redis = client.get_connection().unwrap();
    let id = unique("store-cancel");
    cluster.submit(&million_naps(&id));
    wait_for_outcomes(&mut redis, &id, 2_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run = runtime.block_on(async {
        let store = events::RedisStore::connect(&redis_url()).await.unwrap();
        events::Store::request_cancel(&store, &id).await.unwrap()
    });
    assert!(run.is_some(), "the session has a current run");
    let deadline = Instant::now() + Duration::from_secs(30);
    let result: Value = loop {
        let stored: Option<String> = redis::cmd("GET")
            .arg(format!("agency:result:{{{id}}}"))
            .query(&mut redis)
            .unwrap();
        if let Some(stored) = stored {
            break serde_json::from_str(&stored).unwrap();
        }
        assert!(Instant::now() < deadline, "the marked cancel was not seen");
        std::thread::sleep(Duration::from_millis(100));
    };
    check_cancelled(&result);
    assert_eq!(result["run"].as_str(), run.as_deref());
    check_workers_free(&cluster);
}
