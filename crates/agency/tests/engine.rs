//! The embedded engine end to end: dependent groups and context, retries, timeouts, failure
//! policies, concurrency, cancellation, the final result and cleanup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use agency::Progress;
use common::*;
use events::prelude::*;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A task fanning out over `items` (variable `item`), each instance's input holding `fields`.
fn array_task(id: &str, executor: &str, items: Value, fields: Value, extra: Value) -> Value {
    let mut input = json!({"items": items, "expansion_config": {"type": "array", "array_mapping": {"item": "items"}}});
    for (k, v) in fields.as_object().unwrap() {
        input[k] = v.clone();
    }
    let mut task = json!({"id": id, "executor": executor, "input": input});
    for (k, v) in extra.as_object().unwrap() {
        task[k] = v.clone();
    }
    task
}

#[tokio::test]
async fn dependent_groups_see_upstream_context_and_fan_out_over_it() {
    let result = run(json!({"session_id": "deps", "context": {"greeting": "hi"}, "groups": [
        {"id": "fetch", "tasks": [{"id": "users", "executor": "echo", "input": ["ann", "bob", "cy"]}]},
        {"id": "greet", "depends_on": ["fetch"], "tasks": [{"id": "greetings", "executor": "echo", "input": {
            "text": "{{context.greeting}} {{user}}",
            "expansion_config": {"type": "array", "array_mapping": {"user": "context.users"}}
        }}]},
        {"id": "count", "depends_on": ["greet"], "tasks": [{"id": "total", "executor": "echo", "input": {"all": "{{context.greetings}}"}}]}
    ]}))
    .await;
    assert_eq!(result["status"], "completed", "{result:#}");
    assert_eq!(result["context"]["users"], json!(["ann", "bob", "cy"]));
    assert_eq!(
        result["context"]["greetings"][2],
        json!({"text": "hi cy", "user": "cy"})
    );
    assert_eq!(
        result["context"]["total"]["all"].as_array().unwrap().len(),
        3
    );
    let greetings = &result["groups"]["greet"]["tasks"]["greetings"];
    assert!(
        greetings["started_at"].as_str() <= greetings["finished_at"].as_str()
            && greetings["duration_ms"].is_u64(),
        "{greetings:#}"
    );
    assert_eq!(
        without_times(greetings.clone()),
        json!({"status": "completed", "instances": 3, "succeeded": 3, "failed": 0, "attempts": 3})
    );
    assert_eq!(result["errors"], json!([]));
}

#[tokio::test]
async fn a_downstream_task_never_sees_a_partial_list() {
    // Upstream instances finish in scrambled order; the downstream fan-out must see all 40.
    let sleeps: Vec<u64> = (0..40).map(|i| (i * 7) % 13).collect();
    let result = run(json!({"groups": [{"id": "g", "tasks": [
        array_task("slow", "sleep", json!(sleeps), json!({"ms": "{{item}}"}), json!({})),
        {"id": "after", "executor": "echo", "depends_on": ["slow"], "input": {
            "seen": "{{index}}",
            "expansion_config": {"type": "array", "array_mapping": {"x": "context.slow"}}
        }}
    ]}]}))
    .await;
    assert_eq!(result["status"], "completed");
    assert_eq!(result["groups"]["g"]["tasks"]["after"]["instances"], 40);
    assert_eq!(result["context"]["slow"].as_array().unwrap().len(), 40);
}

#[tokio::test(start_paused = true)]
async fn retry_delays_are_honoured() {
    let started = Instant::now();
    let result = run(json!({"groups": [{"id": "g", "tasks": [{
        "id": "flaky", "executor": "fail", "input": {"times": 2},
        "retry": {"max_retries": 3, "retry_delays": [1000, 5000]}
    }]}]}))
    .await;
    let elapsed = started.elapsed();
    assert_eq!(result["status"], "completed", "{result:#}");
    assert_eq!(result["groups"]["g"]["tasks"]["flaky"]["attempts"], 3);
    assert!(
        elapsed >= Duration::from_millis(6000),
        "retried after {elapsed:?}, before the 1 s + 5 s delays"
    );
    assert!(
        elapsed < Duration::from_millis(6500),
        "retries took {elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_report_attempts_and_the_last_error() {
    let result = run(json!({"groups": [{"id": "g", "tasks": [{
        "id": "broken", "executor": "fail", "input": {"times": 99},
        "retry": {"max_retries": 2, "backoff": {"initial_ms": 100, "factor": 2}}
    }]}]}))
    .await;
    assert_eq!(result["status"], "failed");
    let task = &result["groups"]["g"]["tasks"]["broken"];
    assert_eq!(task["attempts"], 3);
    // Retried after 100 and 200 ms: the last attempt failed 300 ms (and a little) after the
    // task started, and the task ended then.
    let last = task["failures"][0]["last_attempt_at"].as_str().unwrap();
    assert!(task["started_at"].as_str().unwrap() < last, "{task:#}");
    assert_eq!(task["finished_at"].as_str(), Some(last), "{task:#}");
    assert!(task["duration_ms"].as_u64().unwrap() >= 300, "{task:#}");
    assert_eq!(
        without_times(task["failures"].clone()),
        json!([{"instance": 0, "attempts": 3, "error": "failing attempt 3 of instance 0 on purpose", "kind": "error"}])
    );
    assert_eq!(result["errors"][0], "group `g` task `broken`: 1 instance failed; first, instance 0 after 3 attempts: failing attempt 3 of instance 0 on purpose");
}

#[tokio::test(start_paused = true)]
async fn instance_timeouts_fail_attempts() {
    let result = run(json!({"groups": [{"id": "g", "failure_policy": "all_settled", "tasks": [
        array_task("naps", "sleep", json!([10, 60000, 20]), json!({"ms": "{{item}}"}), json!({"timeout_ms": 1000}))
    ]}]}))
    .await;
    let task = &result["groups"]["g"]["tasks"]["naps"];
    assert_eq!(
        (task["succeeded"].as_u64(), task["failed"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(task["failures"][0]["error"], "timed out after 1000 ms");
    assert_eq!(result["status"], "partial");
}

#[tokio::test(start_paused = true)]
async fn a_group_timeout_gives_partial_results() {
    let started = Instant::now();
    let result = run(json!({"groups": [
        {"id": "slow", "timeout_ms": 500, "tasks": [
            array_task("naps", "sleep", json!([10, 3600000, 20]), json!({"ms": "{{item}}"}), json!({}))
        ]},
        {"id": "later", "depends_on": ["slow"], "tasks": [{"id": "never", "executor": "noop"}]}
    ]}))
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the hour-long sleep was not cut short"
    );
    assert_eq!(result["status"], "partial");
    assert_eq!(result["groups"]["slow"]["status"], "timed_out");
    assert_eq!(result["groups"]["later"]["status"], "skipped");
    let naps = &result["groups"]["slow"]["tasks"]["naps"];
    assert_eq!(naps["status"], "incomplete");
    assert_eq!(
        naps["results"],
        json!([
            {"instance": 0, "result": {"slept_ms": 10}},
            {"instance": 2, "result": {"slept_ms": 20}}
        ])
    );
    let errors: Vec<&str> = result["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        errors.contains(&"group `slow` timed out after 500 ms"),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"group `later` skipped: slow did not complete"),
        "{errors:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_session_timeout_stops_everything() {
    let result = run(json!({"timeout_ms": 300, "groups": [
        {"id": "g", "tasks": [{"id": "nap", "executor": "sleep", "input": {"ms": 3600000}}]}
    ]}))
    .await;
    assert_eq!(result["status"], "failed");
    assert_eq!(result["errors"][0], "session timed out after 300 ms");
    assert_eq!(result["groups"]["g"]["status"], "timed_out");
}

fn policy_session(policy: Value) -> Value {
    // Instance 2 fails every attempt; the others succeed.
    json!({"groups": [
        {"id": "work", "failure_policy": policy, "tasks": [{"id": "t", "executor": "fail", "input": {
            "times": "{{n}}", "ns": [0, 0, 99, 0, 0],
            "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}
        }}]},
        {"id": "next", "depends_on": ["work"], "tasks": [{"id": "u", "executor": "noop"}]}
    ]})
}

#[tokio::test]
async fn fail_fast_fails_the_group_and_skips_dependents() {
    let result = run(policy_session(json!("fail_fast"))).await;
    assert_eq!(result["groups"]["work"]["status"], "failed");
    assert_eq!(result["groups"]["next"]["status"], "skipped");
    assert_eq!(
        result["groups"]["work"]["tasks"]["t"]["failures"][0]["instance"],
        2
    );
    assert_ne!(result["status"], "completed");
}

#[tokio::test]
async fn all_settled_runs_every_instance_then_fails() {
    let result = run(policy_session(json!("all_settled"))).await;
    let task = &result["groups"]["work"]["tasks"]["t"];
    assert_eq!(
        (task["succeeded"].as_u64(), task["failed"].as_u64()),
        (Some(4), Some(1))
    );
    // Its failure fails the group, and the task with it (issue 30, finding 7).
    assert_eq!(task["status"], "failed");
    assert_eq!(result["groups"]["work"]["status"], "failed");
    assert_eq!(result["status"], "partial");
    // The failed instance is a null in the separate list.
    assert_eq!(result["context"]["t"][2], Value::Null);
}

#[tokio::test]
async fn threshold_tolerates_failures_within_it() {
    let result = run(policy_session(json!({"threshold": 1}))).await;
    assert_eq!(result["groups"]["work"]["status"], "completed");
    assert_eq!(result["groups"]["next"]["status"], "completed");
    assert_eq!(result["status"], "completed");
    let strict = run(policy_session(json!({"threshold": 0.1}))).await;
    assert_eq!(
        strict["groups"]["work"]["status"], "failed",
        "1 of 5 is over 10%"
    );
}

#[tokio::test]
async fn continue_on_error_keeps_the_group_going() {
    let mut doc = policy_session(json!("fail_fast"));
    doc["groups"][0]["tasks"][0]["continue_on_error"] = json!(true);
    let result = run(doc).await;
    assert_eq!(result["status"], "completed");
    assert_eq!(result["groups"]["work"]["tasks"]["t"]["failed"], 1);
}

#[tokio::test]
async fn independent_groups_run_concurrently() {
    let mut engine = engine();
    let gauge = Arc::new(Gauge::default());
    engine.registry_mut().register(
        "measured",
        Measured {
            gauge: gauge.clone(),
            ms: 200,
        },
    );
    let result = run_on(
        &engine,
        &json!({"groups": [
            {"id": "a", "tasks": [{"id": "ta", "executor": "measured"}]},
            {"id": "b", "tasks": [{"id": "tb", "executor": "measured"}]}
        ]}),
    )
    .await;
    assert_eq!(result["status"], "completed");
    assert_eq!(
        gauge.max.load(Ordering::SeqCst),
        2,
        "both groups' tasks were in flight together"
    );
}

#[tokio::test]
async fn per_task_concurrency_is_a_limit() {
    let mut engine = agency::embedded::Engine::new(agency::embedded::EmbeddedOptions {
        workers: 1,
        ..Default::default()
    });
    let gauge = Arc::new(Gauge::default());
    engine.registry_mut().register(
        "measured",
        Measured {
            gauge: gauge.clone(),
            ms: 5,
        },
    );
    let items: Vec<u32> = (0..30).collect();
    let result = run_on(
        &engine,
        &json!({"groups": [{"id": "g", "tasks": [
            array_task("limited", "measured", json!(items), json!({}), json!({"concurrency": 3}))
        ]}]}),
    )
    .await;
    assert_eq!(result["status"], "completed");
    assert_eq!(gauge.calls.load(Ordering::SeqCst), 30);
    assert_eq!(gauge.max.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn an_executor_that_ignores_cancellation_does_not_hang_its_group() {
    let mut engine = engine();
    engine.registry_mut().register("stubborn", Stubborn);
    let result = run_on(
        &engine,
        &json!({"groups": [{"id": "g", "tasks": [
            {"id": "stuck", "executor": "stubborn", "timeout_ms": 250}
        ]}]}),
    )
    .await;
    assert_eq!(
        result["groups"]["g"]["tasks"]["stuck"]["failures"][0]["error"],
        "timed out after 250 ms"
    );
}

/// Reliability F14: a panicking executor fails its attempt with the panic's message, the retry
/// policy applies, and the range's other instances are recorded. Before, the panic took the
/// whole range down and its offset was committed without outcomes: the session never ended.
#[tokio::test]
async fn a_panicking_executor_fails_its_attempt_and_the_session_goes_on() {
    let mut engine = engine();
    engine.registry_mut().register("panicky", Panicky);
    let doc = json!({"groups": [{"id": "g", "tasks": [
        array_task("t", "panicky", json!([10, 20, 30]), json!({"n": "{{item}}"}),
            json!({"retry": {"max_retries": 1, "retry_delays": [0]}}))
    ]}]});
    let result = tokio::time::timeout(Duration::from_secs(30), run_on(&engine, &doc))
        .await
        .expect("the session ends");
    assert_eq!(result["status"], "completed", "{result:#}");
    let task = &result["groups"]["g"]["tasks"]["t"];
    assert_eq!(task["succeeded"], 3);
    assert_eq!(task["attempts"], 4, "instance 1 ran twice");
    assert_eq!(result["context"]["t"][1]["n"], 20);

    // Without a retry the attempt's error is the panic's.
    let doc = json!({"groups": [{"id": "g", "failure_policy": "all_settled", "tasks": [
        array_task("t", "panicky", json!([10, 20, 30]), json!({"n": "{{item}}"}), json!({}))
    ]}]});
    let result = tokio::time::timeout(Duration::from_secs(30), run_on(&engine, &doc))
        .await
        .expect("the session ends");
    let task = &result["groups"]["g"]["tasks"]["t"];
    assert_eq!(task["succeeded"], 2);
    assert_eq!(
        task["failures"][0]["error"],
        "executor `panicky` panicked: boom at instance 1"
    );
}

#[tokio::test]
async fn cancellation_stops_the_session_with_partial_results() {
    let engine = engine();
    let session = engine
        .validate(&json!({"groups": [{"id": "g", "tasks": [
            array_task("naps", "sleep", json!([1, 1, 60000]), json!({"ms": "{{item}}"}), json!({}))
        ]}]}).to_string())
        .unwrap();
    let progress = Progress::default();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let (result, ()) = tokio::join!(engine.run(&session, &progress, cancel), async {
        // Cancel once the two short instances are done (the run ends either way).
        while progress.settled.load(Ordering::SeqCst) < 2 && !trigger.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        trigger.cancel();
    });
    let result = result.unwrap().to_json();
    assert_eq!(result["status"], "cancelled");
    assert_eq!(result["groups"]["g"]["status"], "cancelled");
    assert_eq!(result["errors"][0], "cancelled before the session finished");
    assert_eq!(
        result["groups"]["g"]["tasks"]["naps"]["results"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn the_final_result_is_stored_published_and_working_state_cleaned() {
    let engine = engine();
    let store = engine.memory().unwrap();
    let mut results = store.subscribe(events::RESULTS_CHANNEL).await.unwrap();
    let result = run_on(&engine, &json!({"session_id": "kept", "groups": [{"id": "g", "tasks": [{"id": "t", "executor": "echo", "input": 1}]}]})).await;
    assert_eq!(result["context"]["t"], 1);
    let published: Value = serde_json::from_slice(&results.next().await.unwrap()).unwrap();
    assert_eq!(
        published,
        json!({"session_id": "kept", "status": "completed"}),
        "the announcement, not the result, goes on pub/sub"
    );
    assert_eq!(store.load_result("kept").await.unwrap(), Some(result));
    assert_eq!(
        store.working_sessions(),
        0,
        "tasks, outcomes, context and mappings are deleted"
    );
}

#[tokio::test]
async fn output_formats_shape_the_context() {
    let task = |id: &str, format: &str| {
        json!({"id": id, "executor": "echo", "input": {
            "n": "{{x}}", "xs": [1, 2, 3],
            "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}, "output_format": format}
        }})
    };
    let result = run(json!({"groups": [{"id": "g", "tasks": [task("sep", "separate"), task("mer", "merge"), task("sin", "single")]}]})).await;
    assert_eq!(
        result["context"]["sep"],
        json!([{"n": 1, "x": 1}, {"n": 2, "x": 2}, {"n": 3, "x": 3}])
    );
    assert_eq!(result["context"]["mer"], json!({"n": 3, "x": 3}));
    assert_eq!(
        result["context"]["sin"]["n"],
        json!({"count": 3, "sum": 6, "min": 1, "max": 3, "mean": 2})
    );
}

#[tokio::test]
async fn a_plan_that_fails_at_run_time_fails_its_task() {
    // `context.users` exists but is not a list when the fan-out is planned.
    let result = run(json!({"groups": [
        {"id": "a", "tasks": [{"id": "users", "executor": "echo", "input": {"not": "a list"}}]},
        {"id": "b", "depends_on": ["a"], "tasks": [{"id": "each", "executor": "echo", "input": {
            "expansion_config": {"type": "array", "array_mapping": {"u": "context.users"}}
        }}]}
    ]}))
    .await;
    assert_eq!(result["groups"]["b"]["status"], "failed");
    assert_eq!(result["groups"]["b"]["tasks"]["each"]["error"], "task `each` at groups[1].tasks[0].input.expansion_config.array_mapping.u: `context.users` must be an array, found object");
}

#[tokio::test]
async fn large_results_are_stored_by_reference_and_combined_whole() {
    // Each instance returns ~100 KB, over the 64 KiB threshold.
    let big = "x".repeat(100_000);
    let engine = engine();
    let store = engine.memory().unwrap();
    let result = run_on(&engine, &json!({"session_id": "big", "groups": [{"id": "g", "tasks": [
        array_task("large", "echo", json!([1, 2]), json!({"payload": big, "n": "{{item}}"}), json!({}))
    ]}]}))
    .await;
    assert_eq!(result["status"], "completed");
    let results = result["context"]["large"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[1]["n"], 2);
    assert_eq!(results[1]["payload"].as_str().unwrap().len(), 100_000);
    assert_eq!(store.blobs_saved(), 2, "both results went by reference");
    assert_eq!(
        store.working_sessions(),
        0,
        "blobs are cleaned up with the session"
    );
}

#[tokio::test]
async fn a_permanent_failure_is_not_retried_and_is_reported_as_such() {
    let result = run(
        json!({"groups": [{"id": "g", "failure_policy": "all_settled", "tasks": [
            {"id": "wrong", "executor": "fail", "input": {"times": 9, "permanent": true},
             "retry": {"max_retries": 3, "retry_delays": [0]}},
            {"id": "no_ms", "executor": "sleep", "input": {"seconds": 1},
             "retry": {"max_retries": 3, "retry_delays": [0]}},
            {"id": "flaky", "executor": "fail", "input": {"times": 9},
             "retry": {"max_retries": 2, "retry_delays": [0]}}
        ]}]}),
    )
    .await;
    let tasks = &result["groups"]["g"]["tasks"];
    assert_eq!(
        tasks["wrong"]["attempts"], 1,
        "a permanent failure is not retried"
    );
    assert_eq!(tasks["wrong"]["failures"][0]["permanent"], true);
    assert_eq!(tasks["no_ms"]["attempts"], 1, "bad input is permanent");
    assert_eq!(tasks["no_ms"]["failures"][0]["error"], "sleep needs `ms`");
    assert_eq!(
        tasks["flaky"]["attempts"], 3,
        "a transient failure is retried"
    );
    assert_eq!(tasks["flaky"]["failures"][0].get("permanent"), None);
}

/// A session whose `work` group runs `naps` (sleeps of the given ms), and whose exit handler
/// `cleanup` runs a real program that hands back what it saw in `context._session`.
fn with_exit_handler(naps: Value, extra: Value) -> Value {
    let mut doc = json!({"session_id": "exits", "groups": [
        {"id": "work", "tasks": [array_task("naps", "sleep", naps, json!({"ms": "{{item}}"}), json!({}))]},
        {"id": "later", "depends_on": ["work"], "tasks": [{"id": "later", "executor": "echo", "input": 1}]},
        {"id": "cleanup", "on_exit": true, "tasks": [{"id": "tidy", "executor": "command", "input": {
            "argv": ["cat"], "seen": "{{context._session}}"
        }}]}
    ]});
    doc.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    doc
}

#[tokio::test]
async fn an_exit_handler_runs_after_success_and_after_failure() {
    let result = run(with_exit_handler(json!([1, 2]), json!({}))).await;
    assert_eq!(result["status"], "completed", "{result:#}");
    assert_eq!(
        result["context"]["tidy"]["seen"],
        json!({"status": "completed", "errors": [], "groups": {"work": "completed", "later": "completed"}})
    );
    assert_eq!(result["groups"]["cleanup"]["status"], "completed");

    // `sleep` without a number fails permanently, at once: `work` fails before anything
    // succeeded, `later` is skipped.
    let result = run(with_exit_handler(json!([1, "x"]), json!({}))).await;
    assert_eq!(result["status"], "failed", "{result:#}");
    let seen = &result["context"]["tidy"]["seen"];
    assert_eq!(seen["status"], "failed");
    assert_eq!(
        seen["groups"],
        json!({"work": "failed", "later": "skipped"})
    );
    assert!(
        seen["errors"][0].as_str().unwrap().contains("naps"),
        "{seen}"
    );
    assert_eq!(result["groups"]["cleanup"]["status"], "completed");

    // A failing exit handler is reported and makes a completed session partial.
    let mut doc = with_exit_handler(json!([1]), json!({}));
    doc["groups"][2]["tasks"][0]["input"]["argv"] = json!(["sh", "-c", "echo broken >&2; exit 4"]);
    let result = run(doc).await;
    assert_eq!(result["status"], "partial", "{result:#}");
    assert_eq!(result["groups"]["work"]["status"], "completed");
    assert_eq!(result["groups"]["cleanup"]["status"], "failed");
    assert!(
        result["errors"][0]
            .as_str()
            .unwrap()
            .contains("exited with code 4: broken"),
        "{result:#}"
    );
}

#[tokio::test]
async fn an_exit_handler_runs_after_a_cancel_and_after_the_session_deadline() {
    let engine = engine();
    let session = engine
        .validate(&with_exit_handler(json!([1, 60000]), json!({})).to_string())
        .unwrap();
    let progress = Progress::default();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let (result, ()) = tokio::join!(engine.run(&session, &progress, cancel), async {
        while progress.settled.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        trigger.cancel();
    });
    let result = result.unwrap().to_json();
    assert_eq!(result["status"], "cancelled", "{result:#}");
    assert_eq!(result["context"]["tidy"]["seen"]["status"], "cancelled");
    assert_eq!(
        result["context"]["tidy"]["seen"]["groups"],
        json!({"work": "cancelled", "later": "skipped"})
    );
    assert_eq!(result["groups"]["cleanup"]["status"], "completed");

    let started = Instant::now();
    let result = run(with_exit_handler(
        json!([1, 60000]),
        json!({"timeout_ms": 300}),
    ))
    .await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(result["status"], "partial", "{result:#}");
    let seen = &result["context"]["tidy"]["seen"];
    assert_eq!(seen["status"], "partial");
    assert_eq!(seen["errors"][0], "session timed out after 300 ms");
    assert_eq!(result["groups"]["cleanup"]["status"], "completed");
}
