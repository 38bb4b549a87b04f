//! Where tasks are planned and what workers are handed: a task record carries the context keys
//! its expansion reads, and a plan is made again at run time only when the context it read can
//! have changed.

mod common;
use agency::Progress;
use common::*;
use events::TaskRef;
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_task_record_carries_only_the_context_keys_the_task_reads() {
    let big: Vec<u64> = (0..1_000_000).collect();
    let doc = json!({"session_id": "sized", "context": {"big": big, "small": [20, 30]}, "groups": [
        {"id": "g", "tasks": [{"id": "naps", "executor": "sleep", "input": {
            "ms": "{{nap}}",
            "expansion_config": {"type": "array", "array_mapping": {"nap": "context.small"}}
        }}]}
    ]});
    let context_bytes = serde_json::to_vec(&doc["context"]).unwrap().len();
    let engine = engine();
    let store = engine.store();
    let session = engine.validate(&doc.to_string()).unwrap();
    let progress = Progress::default();
    let (result, record) = tokio::join!(
        engine.run(&session, &progress, CancellationToken::new()),
        async {
            // The record exists while the task runs; the session cleans it up when it ends.
            loop {
                let task = TaskRef { group: 0, task: 0 };
                if let Some(record) = store.load_task("sized", task).await.unwrap() {
                    break record;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    );
    let result = result.unwrap().to_json();
    assert_eq!(result["status"], "completed", "{result:#}");
    assert_eq!(record.context, json!({"small": [20, 30]}));
    let record_bytes = serde_json::to_vec(&record).unwrap().len();
    eprintln!("task record: {record_bytes} bytes; the whole context: {context_bytes} bytes");
    assert!(record_bytes < 1024, "{record_bytes} bytes");
    assert!(context_bytes > 6_000_000);
}

#[tokio::test]
async fn a_task_reading_a_key_an_upstream_task_overwrites_is_planned_against_the_new_value() {
    let result = run(json!({"context": {"xs": [1]}, "groups": [
        {"id": "a", "tasks": [{"id": "make", "executor": "echo", "input": [1, 2, 3], "result_key": "xs"}]},
        {"id": "b", "depends_on": ["a"], "tasks": [{"id": "each", "executor": "echo", "input": {
            "x": "{{x}}",
            "expansion_config": {"type": "array", "array_mapping": {"x": "context.xs"}}
        }}]}
    ]}))
    .await;
    assert_eq!(result["status"], "completed", "{result:#}");
    assert_eq!(result["groups"]["b"]["tasks"]["each"]["instances"], 3);
    assert_eq!(
        result["context"]["each"],
        json!([{"x": 1}, {"x": 2}, {"x": 3}])
    );
}
