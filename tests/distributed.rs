//! The distributed mode end to end: a coordinator and two worker processes over the real Kafka
//! broker and Redis, in a namespace of their own per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::{
    agency_bin, kafka_brokers, produce, redis_url, strip_times, unique, Cluster,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::Message as _;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Results kept by reference on the single Redis (`tests/cluster.rs` runs the same on the
/// cluster).
#[test]
fn results_kept_by_reference_are_mapped_over_and_paged() {
    integration_tests::results_kept_by_reference_on(&Cluster::start("kept"));
}

fn with_id(mut doc: Value, id: &str) -> Value {
    doc["session_id"] = json!(id);
    doc
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn a_coordinator_and_two_workers_give_the_same_result_as_agency_run() {
    let cluster = Cluster::start("same-result");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(examples().join("pipeline.json")).unwrap())
            .unwrap();
    let doc = with_id(doc, &unique("pipeline"));
    let (code, mut distributed) = cluster.submit_wait(&doc);
    assert_eq!(code, 0, "{distributed:#}");
    // The one difference, on purpose: a distributed result names its run, the action's position.
    let run = distributed
        .as_object_mut()
        .unwrap()
        .shift_remove("run")
        .unwrap();
    let run: events::Origin = run.as_str().unwrap().parse().unwrap();
    assert_eq!(run.topic, format!("{}agency_action", cluster.namespace));

    let file = cluster.dir.join("embedded.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let output = Command::new(agency_bin())
        .args(["run", "--quiet"])
        .arg(&file)
        .output()
        .unwrap();
    let mut embedded: Value = serde_json::from_slice(&output.stdout).unwrap();
    // And the times, which differ from run to run; a distributed session was submitted first.
    assert!(
        distributed["submitted_at"].as_str() < distributed["started_at"].as_str(),
        "{distributed:#}"
    );
    assert!(embedded["submitted_at"].is_null() && embedded["started_at"].is_string());
    strip_times(&mut distributed);
    strip_times(&mut embedded);
    assert_eq!(
        distributed, embedded,
        "distributed and embedded results differ"
    );
    assert_eq!(
        distributed["groups"]["grid"]["tasks"]["region_quarters"]["instances"],
        11
    );
}

#[test]
fn a_large_fan_out_completes_with_each_instance_once() {
    let cluster = Cluster::start("large");
    let rows: Vec<u32> = (0..20).collect();
    let cols: Vec<u32> = (0..1000).collect();
    let doc = json!({"session_id": unique("spread"), "groups": [{"id": "g", "tasks": [{"id": "cells", "executor": "echo", "input": {
        "cell": "{{r}}:{{c}}", "rows": rows, "cols": cols,
        "expansion_config": {"type": "matrix", "array_mapping": {"r": "rows", "c": "cols"}}
    }}]}]});
    let (code, result) = cluster.submit_wait(&doc);
    assert_eq!(code, 0, "{}", result["errors"]);
    let cells = result["context"]["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 20_000);
    assert_eq!(cells[19_999]["cell"], "19:999");
    assert_eq!(
        result["groups"]["g"]["tasks"]["cells"]["attempts"], 20_000,
        "no instance ran twice"
    );
}

#[test]
fn concurrent_sessions_over_two_coordinators_each_get_their_own_result() {
    // Each coordinator reads every session's notices over one subscription and must act only on
    // its own sessions'; each session's result must carry its own inputs.
    let cluster = Cluster::start_with(
        "concurrent",
        &["coordinator", "coordinator", "worker", "worker"],
    );
    let results: Vec<(u64, i32, Value)> = std::thread::scope(|scope| {
        let runs: Vec<_> = (1..=6u64)
            .map(|n| {
                let cluster = &cluster;
                scope.spawn(move || {
                    let xs: Vec<u64> = (0..n * 50).collect();
                    let doc = json!({"session_id": unique(&format!("concurrent-{n}")), "groups": [
                        {"id": "a", "tasks": [{"id": "xs", "executor": "echo", "input": {
                            "x": "{{x}}", "xs": xs, "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}
                        }}]},
                        {"id": "b", "depends_on": ["a"], "tasks": [{"id": "again", "executor": "echo", "input": {"n": n}}]}
                    ]});
                    let (code, result) = cluster.submit_wait(&doc);
                    (n, code, result)
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    for (n, code, result) in results {
        assert_eq!(code, 0, "session {n}: {}", result["errors"]);
        let xs = result["context"]["xs"].as_array().unwrap();
        assert_eq!(xs.len() as u64, n * 50, "session {n}");
        assert_eq!(xs.last().unwrap()["x"], json!(n * 50 - 1), "session {n}");
        assert_eq!(result["context"]["again"]["n"], json!(n), "session {n}");
    }
}

#[test]
fn a_killed_coordinators_session_is_resumed_by_another_coordinator() {
    let mut cluster = Cluster::start("resume");
    let id = unique("resume");
    // `first` settles quickly; `second` is still running when the coordinator is killed.
    let doc = json!({"session_id": id, "groups": [
        {"id": "first", "tasks": [{"id": "xs", "executor": "echo", "input": {
            "x": "{{x}}", "xs": [1, 2, 3, 4, 5], "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}
        }}]},
        {"id": "second", "depends_on": ["first"], "tasks": [{"id": "naps", "executor": "sleep", "input": {
            "ms": 3000, "ns": [1, 2, 3, 4], "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}
        }}]}
    ]});
    cluster.submit(&doc);

    // Wait until `first` has written its context, i.e. `second` has been dispatched.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut redis = client.get_connection().unwrap();
    let context = format!("agency:{{{id}}}:context");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !redis::cmd("HEXISTS")
        .arg(&context)
        .arg("xs")
        .query::<bool>(&mut redis)
        .unwrap()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first group never finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let coordinator = &mut cluster.processes[0];
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    let result_key = format!("agency:result:{{{id}}}");
    let finished: bool = redis::cmd("EXISTS")
        .arg(&result_key)
        .query(&mut redis)
        .unwrap();
    assert!(
        !finished,
        "the session finished before the kill; the test proves nothing"
    );

    // Another coordinator gets the uncommitted action, waits out the dead one's lease, resumes.
    cluster.spawn("coordinator");
    let waited = {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let stored: Option<String> = redis::cmd("GET")
                .arg(&result_key)
                .query(&mut redis)
                .unwrap();
            if let Some(stored) = stored {
                break serde_json::from_str::<Value>(&stored).unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the session was never resumed"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(waited["status"], "completed", "{waited:#}");
    assert_eq!(waited["context"]["xs"].as_array().unwrap().len(), 5);
    assert_eq!(waited["context"]["naps"].as_array().unwrap().len(), 4);
    let tasks = |group: &str, task: &str| waited["groups"][group]["tasks"][task].clone();
    assert_eq!(
        tasks("first", "xs")["attempts"],
        5,
        "each instance counted once"
    );
    assert_eq!(
        tasks("second", "naps")["attempts"],
        4,
        "each instance counted once"
    );
    let log = std::fs::read_to_string(cluster.dir.join("coordinator-3.log")).unwrap();
    assert!(
        log.contains("resuming"),
        "the new coordinator resumed: {log}"
    );
    assert!(
        log.contains("not dispatched again"),
        "recorded work was not dispatched again: {log}"
    );
}

#[test]
fn a_session_id_submitted_again_runs_its_new_definition() {
    // One long-lived worker sees both runs: what it learnt of the first (its planned tasks, the
    // group cancelled by the timeout) must not leak into the second.
    let cluster = Cluster::start_with("again", &["coordinator", "worker"]);
    let id = unique("again");
    let run = |items: u64, nap_ms: u64| {
        let xs: Vec<u64> = (0..items).collect();
        json!({"session_id": id, "groups": [
            {"id": "echoes", "tasks": [{"id": "xs", "executor": "echo", "input": {
                "x": "{{x}}", "xs": xs, "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}
            }}]},
            {"id": "naps", "timeout_ms": 500, "tasks": [{"id": "nap", "executor": "sleep", "input": {"ms": nap_ms}}]}
        ]})
    };
    let (code, first) = cluster.submit_wait(&run(3, 60_000));
    assert_eq!(code, 1, "{first:#}");
    assert_eq!(first["groups"]["naps"]["status"], "timed_out", "{first:#}");
    assert_eq!(first["context"]["xs"].as_array().unwrap().len(), 3);

    let (code, second) = cluster.submit_wait(&run(5, 10));
    assert_eq!(code, 0, "{second:#}");
    let xs = second["context"]["xs"].as_array().unwrap();
    assert_eq!(xs.len(), 5, "the second run's input, not the first's");
    assert_eq!(xs[4]["x"], 4);
    assert_eq!(second["groups"]["naps"]["status"], "completed");
}

#[test]
fn a_session_whose_state_the_store_lost_fails_loudly() {
    // A Redis restarted without persistence comes back without any key; here only this
    // session's keys go, so that other tests run on. The session must not hang.
    let cluster = Cluster::start("state-lost");
    let id = unique("state-lost");
    let doc = json!({"session_id": id, "groups": [{"id": "g", "tasks": [
        {"id": "nap", "executor": "sleep", "input": {"ms": 60000}}
    ]}]});
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let (code, result) = std::thread::scope(|scope| {
        let waiting = scope.spawn(|| cluster.submit_wait(&doc));
        let task_key = format!("agency:{{{id}}}:task:0:0");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !redis::cmd("EXISTS")
            .arg(&task_key)
            .query::<bool>(&mut redis)
            .unwrap()
        {
            assert!(Instant::now() < deadline, "the session never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("agency:{{{id}}}:*"))
            .query(&mut redis)
            .unwrap();
        assert!(keys.len() >= 3, "lease, origin and task at least: {keys:?}");
        redis::cmd("DEL")
            .arg(&keys)
            .query::<()>(&mut redis)
            .unwrap();
        waiting.join().unwrap()
    });
    assert_ne!(code, 0, "{result:#}");
    assert_eq!(result["status"], "failed", "{result:#}");
    let error = result["errors"][0].as_str().unwrap_or_default();
    assert!(
        error.contains("lost the session's state"),
        "the error says what happened: {error}"
    );
}

#[test]
fn a_failing_task_gives_partial_results() {
    let cluster = Cluster::start("partial");
    let doc = json!({"session_id": unique("partial"), "groups": [
        {"id": "fine", "tasks": [{"id": "ok", "executor": "echo", "input": {"n": 1}}]},
        {"id": "broken", "tasks": [{"id": "bad", "executor": "fail", "input": {"times": 9}, "retry": {"max_retries": 1, "retry_delays": [50]}}]},
        {"id": "after", "depends_on": ["broken"], "tasks": [{"id": "never", "executor": "noop"}]}
    ]});
    let (code, result) = cluster.submit_wait(&doc);
    assert_eq!(code, 1);
    assert_eq!(result["status"], "partial");
    assert_eq!(result["context"]["ok"], json!({"n": 1}));
    assert_eq!(
        result["groups"]["broken"]["tasks"]["bad"]["failures"][0]["attempts"],
        2
    );
    assert_eq!(result["groups"]["after"]["status"], "skipped");
}

#[test]
fn a_permanent_failure_crosses_redis_and_is_not_retried() {
    let cluster = Cluster::start("permanent");
    let doc = json!({"session_id": unique("permanent"), "groups": [
        {"id": "g", "tasks": [{"id": "wrong", "executor": "fail", "input": {"times": 9, "permanent": true},
            "retry": {"max_retries": 3, "retry_delays": [0]}}]}
    ]});
    let (code, result) = cluster.submit_wait(&doc);
    assert_eq!(code, 1);
    let wrong = &result["groups"]["g"]["tasks"]["wrong"];
    assert_eq!(wrong["attempts"], 1);
    assert_eq!(wrong["status"], "failed");
    assert_eq!(wrong["failures"][0]["permanent"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_kafka_producer_and_a_plain_redis_subscriber_are_enough() {
    let cluster = Cluster::start("plain-clients");
    // Subscribe to results first, as any client would, with nothing but the redis crate.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("agency:results").await.unwrap();
    let mut results = pubsub.into_on_message();

    let id = unique("plain");
    let action = json!({"key": id, "action": "initialize", "context": {"greeting": "hello"},
        "data": {"groups": [{"id": "g", "tasks": [{"id": "say", "executor": "echo", "input": "{{context.greeting}} world"}]}]}});
    produce(
        &format!("{}agency_action", cluster.namespace),
        &id,
        action.to_string().as_bytes(),
    )
    .await;

    let result = tokio::time::timeout(Duration::from_secs(120), async {
        use futures_util::StreamExt as _;
        loop {
            let message = results.next().await.expect("subscription open");
            let result: Value = serde_json::from_slice(message.get_payload_bytes()).unwrap();
            if result["session_id"] == id {
                return result;
            }
        }
    })
    .await
    .expect("a result within 2 minutes");
    // The announcement names the session and how it ended; the result is a plain GET away.
    assert_eq!(result["status"], "completed");
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let stored: String = redis::cmd("GET")
        .arg(format!("agency:result:{{{id}}}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let result: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(result["status"], "completed");
    assert_eq!(result["context"]["say"], "hello world");
    assert_eq!(result["context"]["greeting"], "hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_actions_are_dead_lettered_and_the_coordinator_keeps_going() {
    let cluster = Cluster::start("dead-letters");
    let topic = format!("{}agency_action", cluster.namespace);
    produce(&topic, "junk", b"{this is not json").await;
    produce(&topic, "odd", br#"{"action": "explode", "data": {}}"#).await;
    // 900 kB of control characters: copied into a JSON record each would take 6 bytes, 5.4 MB
    // in all, more than a broker takes. It is dead-lettered by reference instead.
    produce(&topic, "huge", &vec![1u8; 900_000]).await;
    // An id that would end its Redis hash tag early.
    produce(
        &topic,
        "brace",
        br#"{"key": "}x", "action": "initialize", "data": {"groups": []}}"#,
    )
    .await;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        // The topic appears with the first dead letter; look for it every second, not every 5 min.
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&format!("{}agency_dead_letter", cluster.namespace)])
        .unwrap();
    let mut reasons = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while reasons.len() < 4 {
        let received = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .expect("dead letters within 2 minutes");
        // The topic is created with the first dead letter; until then the reader is told it is unknown.
        let Ok(message) = received else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let record: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        assert_eq!(record["topic"], topic);
        if record["key"] == "huge" {
            assert_eq!(record["payload_bytes"], 900_000);
            assert_eq!(record["payload_head"].as_str().unwrap().len(), 1024);
            assert!(record.get("payload").is_none(), "by reference, not copied");
        } else {
            assert!(record["payload"].is_string());
        }
        reasons.push(record["reason"].as_str().unwrap().to_string());
    }
    reasons.sort();
    assert!(
        reasons[0].starts_with("not an agency action"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("not an agency action"),
        "{reasons:?}"
    );
    assert_eq!(
        reasons[2],
        "session id `}x` must not contain `{` or `}` (they delimit the session's Redis hash tag)"
    );
    assert_eq!(
        reasons[3],
        "unknown action `explode` (expected initialize, cancel, rerun, pause or resume)"
    );

    // The coordinator is still taking sessions.
    let doc = json!({"session_id": unique("after-junk"), "groups": [{"id": "g", "tasks": [{"id": "t", "executor": "echo", "input": 5}]}]});
    let (code, result) = tokio::task::spawn_blocking(move || cluster.submit_wait(&doc))
        .await
        .unwrap();
    assert_eq!(code, 0, "{result:#}");
    assert_eq!(result["context"]["t"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_session_from_kafka_gets_a_failed_result() {
    let cluster = Cluster::start("invalid");
    let id = unique("invalid");
    let doc = json!({"session_id": id, "groups": [{"id": "g", "tasks": [{"id": "t", "executor": "warp"}]}]});

    // `agency submit` validates first: the problem is reported before anything is produced.
    let file = cluster.dir.join("invalid.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let output = cluster
        .command(&["submit", "--wait"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown executor `warp`"));

    // A plain producer skips that check: the coordinator answers with a failed result.
    let action = json!({"key": id, "action": "initialize", "data": doc});
    produce(
        &format!("{}agency_action", cluster.namespace),
        &id,
        action.to_string().as_bytes(),
    )
    .await;
    let mut result = None;
    for _ in 0..240 {
        let status = cluster
            .command(&["status", &id, "--json"])
            .output()
            .unwrap();
        if !status.stdout.is_empty() {
            assert_eq!(status.status.code(), Some(1), "a failed result exits 1");
            result = Some(serde_json::from_slice::<Value>(&status.stdout).unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let result = result.expect("a result within 2 minutes");
    assert_eq!(result["status"], "failed");
    assert_eq!(
        result["errors"],
        json!(["groups[0].tasks[0].executor: unknown executor `warp` (known: command, echo, emit_event, fail, http_get, noop, sleep, and `agent` for work agents claim)"])
    );
}

#[test]
fn watch_and_status_follow_a_submitted_session() {
    let cluster = Cluster::start("watch");
    let id = unique("watched");
    let doc = json!({"session_id": id, "groups": [{"id": "g", "tasks": [{"id": "nap", "executor": "sleep", "input": {"ms": 1500}}]}]});
    assert_eq!(cluster.submit(&doc), id, "submit prints the session id");

    let watched = cluster.command(&["watch", &id]).output().unwrap();
    assert_eq!(
        watched.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&watched.stderr)
    );
    let result: Value = serde_json::from_slice(&watched.stdout).unwrap();
    assert_eq!(result["context"]["nap"], json!({"slept_ms": 1500}));

    let status = cluster
        .command(&["status", &id, "--json"])
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(0));
    let stored: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(stored, result);
    let unknown = cluster
        .command(&["status", &unique("nobody")])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("is pending, running or has a result")
    );
}

/// Issue #16: a three-step pipeline over 200 items, each step depending on the one before
/// instance by instance, through Kafka and Redis. Item 7 fails its first step: its later steps
/// fail without running, every other item goes through, each step reads its item's previous
/// result.
#[test]
fn a_pipeline_runs_item_by_item_across_workers() {
    let cluster = Cluster::start("pipeline");
    let times: Vec<u64> = (0..200).map(|i| if i == 7 { 9 } else { 0 }).collect();
    let doc = json!({"session_id": unique("pipeline"), "groups": [{"id": "g",
        "failure_policy": "all_settled", "tasks": [
        {"id": "fetch", "executor": "fail", "input": {"times": "{{t}}", "item": "{{index}}", "ts": times,
            "expansion_config": {"type": "array", "array_mapping": {"t": "ts"}}}},
        {"id": "delay", "executor": "echo", "depends_on": [{"task": "fetch", "each": true}],
         "input": {"item": "{{upstream.fetch.item}}", "ts": times,
            "expansion_config": {"type": "array", "array_mapping": {"t": "ts"}}}},
        {"id": "emit", "executor": "echo", "depends_on": [{"task": "delay", "each": true}],
         "input": {"item": "{{upstream.delay.item}}", "ts": times,
            "expansion_config": {"type": "array", "array_mapping": {"t": "ts"}}}},
    ]}]});
    let (code, result) = cluster.submit_wait(&doc);
    assert_eq!(code, 1, "{result:#}");
    assert_eq!(result["status"], "partial");
    let tasks = &result["groups"]["g"]["tasks"];
    for task in ["fetch", "delay", "emit"] {
        assert_eq!(
            (&tasks[task]["succeeded"], &tasks[task]["failed"]),
            (&json!(199), &json!(1)),
            "{task}"
        );
        assert_eq!(tasks[task]["failures"][0]["instance"], 7, "{task}");
    }
    assert_eq!(
        tasks["emit"]["failures"][0]["error"],
        "not run: instance 7 of task `delay` failed"
    );
    let emit = result["context"]["emit"].as_array().unwrap();
    for (i, item) in emit.iter().enumerate() {
        if i == 7 {
            assert_eq!(item, &Value::Null);
        } else {
            assert_eq!(item["item"], json!(i), "item {i}");
        }
    }
}

/// `agency csv --distributed --batch BATCH` on `rows` with `blueprint`, on `cluster`'s fleet.
fn csv_on_fleet(
    cluster: &Cluster,
    rows: &str,
    blueprint: &Value,
    batch: &str,
) -> std::process::Output {
    let tasks = cluster.dir.join(format!("{}.csv", unique("tasks")));
    std::fs::write(&tasks, rows).unwrap();
    let file = tasks.with_extension("json");
    std::fs::write(&file, blueprint.to_string()).unwrap();
    cluster
        .command(&[
            "csv",
            "--distributed",
            "--quiet",
            "--batch",
            batch,
            "--blueprint",
        ])
        .arg(&file)
        .arg(&tasks)
        .output()
        .unwrap()
}

/// Issue #16: `agency csv --distributed` runs its batches on the coordinator and workers, and
/// writes the same rows as embedded.
#[test]
fn agency_csv_runs_on_the_fleet() {
    let cluster = Cluster::start("csv");
    let blueprint = json!({"blueprints": {
        "bad": [{"step": "boom", "executor": "fail", "input": {"permanent": true}}],
        "*": [{"step": "first", "executor": "echo", "input": {"id": "{{task_id}}"}},
              {"step": "second", "executor": "emit_event", "input": {"id": "{{task_id}}"}}]}});
    let rows = "task_id,task_type\n1,a\n2,bad\n1,a\nx,a\n3,a\n";
    let output = csv_on_fleet(&cluster, rows, &blueprint, "2");
    let written = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{written}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        written,
        "task_id,final_status,error_info\n1,Completed,\n2,Failed,boom: failing attempt 1 of instance 0 on purpose\nx,Failed,line 5: task_id `x` is not a u64\n3,Completed,\n"
    );
}

/// Ranges published side by side land in any order on a partition: a coordinator dispatching
/// 2,000 one-instance ranges at once must not take a lower offset landing after a higher one
/// for a broker that lost its log (it once did, and dispatched everything again, over and over).
#[test]
fn many_ranges_dispatched_at_once_are_not_taken_for_a_lost_log() {
    let mut cluster = Cluster::start_with("many-ranges", &[]);
    cluster.spawn_with("coordinator", &["--chunk", "1"]);
    cluster.spawn("worker");
    cluster.spawn("worker");
    let ns: Vec<u32> = (0..2000).collect();
    let doc = json!({"session_id": unique("many-ranges"), "groups": [{"id": "g", "tasks": [{"id": "t",
        "executor": "echo", "input": {"n": "{{n}}", "ns": ns,
        "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}}]}]});
    let (code, result) = cluster.submit_wait(&doc);
    assert_eq!(code, 0, "{}", result["errors"]);
    assert_eq!(result["context"]["t"].as_array().unwrap().len(), 2000);
    let log = std::fs::read_to_string(cluster.dir.join("coordinator-0.log")).unwrap();
    assert!(!log.contains("lost dispatched work"), "{log}");
}

/// A batch too large for one message (long task types) is split into sessions that fit.
#[test]
fn agency_csv_splits_a_batch_too_large_for_one_message() {
    let cluster = Cluster::start("csv-large");
    let kind = "t".repeat(200);
    let mut rows = String::from("task_id,task_type\n");
    for id in 0..6000 {
        rows.push_str(&format!("{id},{kind}\n"));
    }
    let blueprint = json!({"blueprints": {"*": [{"step": "say", "executor": "echo", "input": {"id": "{{task_id}}"}}]}});
    let output = csv_on_fleet(&cluster, &rows, &blueprint, "10000");
    let written = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        written
            .lines()
            .find(|l| l.contains("Failed"))
            .unwrap_or_default()
    );
    assert_eq!(
        written
            .lines()
            .filter(|l| l.ends_with(",Completed,"))
            .count(),
        6000
    );
    assert_eq!(written.lines().nth(1), Some("0,Completed,"));
    assert_eq!(written.lines().last(), Some("5999,Completed,"));
}

/// A worker's operator says what its sessions may reach: a program it does not allow fails for
/// good, naming the program and the flag, one it allows runs; so for hosts (issue 31, item 4).
#[test]
fn a_worker_runs_only_the_programs_and_hosts_it_allows() {
    let mut cluster = Cluster::start_with("allowed", &["coordinator"]);
    cluster.spawn_with(
        "worker",
        &[
            "--allow-command",
            "python3",
            "--allow-http",
            "allowed.example",
        ],
    );
    let task = |id: &str, executor: &str, input: Value| json!({"id": id, "executor": executor, "input": input, "continue_on_error": true});
    let doc = json!({"session_id": unique("allowed"), "groups": [{"id": "g", "tasks": [
        task("shell", "command", json!({"argv": ["sh", "-c", "echo 1"]})),
        task("moved", "command", json!({"argv": ["/tmp/python3", "-c", "print(1)"]})),
        task("python", "command", json!({"argv": ["python3", "-c", "print(2)"]})),
        task("redis", "http_get", json!({"url": "http://127.0.0.1:6379/"})),
    ]}]});
    let (_, result) = cluster.submit_wait(&doc);
    let tasks = &result["groups"]["g"]["tasks"];
    assert_eq!(result["context"]["python"], 2, "{result:#}");
    let refusal = |task: &str| {
        tasks[task]["failures"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        refusal("shell")
            .starts_with("program `sh` is not allowed on this worker (it allows: python3)"),
        "{}",
        refusal("shell")
    );
    assert!(refusal("shell").contains("--allow-command"));
    assert!(
        refusal("moved").starts_with("program `/tmp/python3` is not allowed"),
        "{}",
        refusal("moved")
    );
    assert!(
        refusal("redis").starts_with(
            "host `127.0.0.1` is not allowed on this worker (it allows: allowed.example)"
        ),
        "{}",
        refusal("redis")
    );
    for refused in ["shell", "moved", "redis"] {
        assert_eq!(
            tasks[refused]["failures"][0]["kind"], "permanent",
            "{result:#}"
        );
        assert_eq!(tasks[refused]["attempts"], 1, "not retried");
    }
}
