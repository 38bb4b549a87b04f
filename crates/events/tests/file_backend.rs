//! The state file store: the conformance suite, and what a store opened again from its file
//! holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use events::prelude::*;
use events::{conformance, Fence, FileStore, Origin, Outcome, Status, TaskRecord, TaskRef};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn state_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agency-file-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

async fn open(path: &Path) -> FileStore {
    FileStore::open(path, Duration::from_millis(20))
        .await
        .unwrap()
}

#[tokio::test]
async fn file_store_conforms() {
    let path = state_file("conforms.db");
    let store = open(&path).await;
    conformance::store_suite(&*store, "file-session").await;
    store.checkpoint().await.unwrap();
    drop(store);
    // What the suite left behind is read back the same: the sessions it cleaned up hold nothing
    // of their working state, the others what they held.
    let reopened = open(&path).await;
    for cleaned in ["file-session-cleanup", "file-session-run-cleanup"] {
        assert_eq!(reopened.current_run(cleaned).await.unwrap(), None);
        assert_eq!(reopened.load_context(cleaned).await.unwrap(), None);
        assert_eq!(reopened.load_state(cleaned).await.unwrap(), None);
    }
    assert!(reopened
        .action_note("file-session-run-cleanup", "agency_action/3/14")
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        reopened.current_run("file-session-start").await.unwrap(),
        Some("agency_action/3/14".to_string())
    );
    assert!(reopened
        .load_context("file-session-context")
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn file_store_memoizes_and_keeps_what_it_memoized() {
    let path = state_file("memo.db");
    let store = open(&path).await;
    conformance::memo_suite(&*store, "memo:").await;
    store
        .memo_put(&[("kept".into(), json!({"v": 1}))], None)
        .await
        .unwrap();
    store
        .memo_put(
            &[("going".into(), json!(2)), ("gone".into(), json!(3))],
            None,
        )
        .await
        .unwrap();
    store.memo_clear("go").await.unwrap();
    store.checkpoint().await.unwrap();
    drop(store);
    let again = open(&path).await;
    assert_eq!(
        again
            .memo_get(&["kept".into(), "going".into(), "gone".into()])
            .await
            .unwrap(),
        [Some(json!({"v": 1})), None, None]
    );
}

#[tokio::test]
async fn file_store_keeps_successes_for_a_rerun() {
    let path = state_file("rerun.db");
    conformance::rerun_suite(&*open(&path).await, "file-rerun").await;
}

#[tokio::test]
async fn file_store_claims_conform() {
    let store = open(&state_file("claims.db")).await;
    conformance::claim_suite(&*store, "file-claim").await;
}

/// The suite, then a mark written before a stop: the cleanup after opening the file again
/// honours it, and what it kept is read back from the file once more.
#[tokio::test]
async fn file_store_keeps_results_by_reference_across_reopening() {
    let path = state_file("kept.db");
    let store = open(&path).await;
    conformance::kept_results_suite(&*store, "file-kept").await;
    let (s, task) = ("s-kept", TaskRef { group: 0, task: 0 });
    store.start_run(s, "run-1", Fence::Open).await.unwrap();
    store
        .save_task(s, task, &record(), Fence::Open)
        .await
        .unwrap();
    let done = outcome(1, 1, Status::Succeeded(json!("one")));
    store
        .record_outcomes(s, task, "run-1", std::slice::from_ref(&done), None)
        .await
        .unwrap();
    store.keep_results(s, task, Fence::Open).await.unwrap();
    store.checkpoint().await.unwrap();
    drop(store);
    let store = open(&path).await;
    store.cleanup_run(s, "run-1").await.unwrap();
    drop(store);
    let store = open(&path).await;
    assert_eq!(
        store.outcomes(s, task, 0..2).await.unwrap(),
        [None, Some(done)]
    );
    assert_eq!(store.load_task(s, task).await.unwrap(), None);
}

fn record() -> TaskRecord {
    TaskRecord {
        run: "run-1".into(),
        task_id: "t".into(),
        group_id: "g".into(),
        executor: "echo".into(),
        input: json!({"x": 1}),
        expansion_config: None,
        context: json!({}),
        timeout_ms: None,
        concurrency: None,
        instances: 3,
        memo_key: None,
        memo_ttl_s: None,
        upstream: Vec::new(),
        agent: None,
        maps_results_of: None,
    }
}

fn outcome(instance: u64, attempt: u32, status: Status) -> Outcome {
    Outcome {
        instance,
        attempt,
        status,
    }
}

/// Everything a run writes, written, checkpointed, and read back from a store opened anew on
/// the same file: the same answers, the context in its order.
#[tokio::test]
async fn a_store_opened_again_holds_everything_checkpointed() {
    let path = state_file("reopen.db");
    let store = open(&path).await;
    let (s, task) = ("s1", TaskRef { group: 1, task: 2 });
    let origin: Origin = "agency_action/0/7".parse().unwrap();
    store
        .claim(s, "me", &origin, "token-1", Duration::from_secs(10))
        .await
        .unwrap();
    store.start_run(s, "run-1", Fence::Open).await.unwrap();
    store
        .save_task(s, task, &record(), Fence::Open)
        .await
        .unwrap();
    let outcomes = [
        outcome(0, 1, Status::Succeeded(json!({"n": 0}))),
        outcome(2, 3, Status::Failed(taskgroup::Failure::error("boom"))),
        outcome(5, 1, Status::Stored("blob-5".into())),
    ];
    store
        .record_outcomes(s, task, "run-1", &outcomes, None)
        .await
        .unwrap();
    store
        .save_blob(s, "blob-5", b"[1,2,3]".to_vec())
        .await
        .unwrap();
    let mut context = Map::new();
    context.insert("zeta".into(), json!(1));
    context.insert("alpha".into(), json!([1, 2]));
    store.save_context(s, &context, Fence::Open).await.unwrap();
    store
        .set_context(s, "middle", &json!("m"), Fence::Open)
        .await
        .unwrap();
    store
        .set_context(s, "zeta", &json!(26), Fence::Open)
        .await
        .unwrap();
    let mut mappings = Map::new();
    mappings.insert("t".into(), json!("t"));
    store
        .save_mappings(s, &mappings, Fence::Open)
        .await
        .unwrap();
    store
        .save_document(s, "run-1", b"{\"groups\":[]}", Fence::Open)
        .await
        .unwrap();
    store
        .save_state(s, b"{\"status\":\"running\"}", true, Fence::Open)
        .await
        .unwrap();
    store
        .note_action(s, "agency_action/0/9", "attached:run-1")
        .await
        .unwrap();
    store.request_cancel(s).await.unwrap();
    store
        .publish_result("done", b"{\"status\":\"completed\"}", b"{}", Fence::Open)
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    drop(store);

    let again = open(&path).await;
    assert_eq!(
        again.current_run(s).await.unwrap().as_deref(),
        Some("run-1")
    );
    assert_eq!(again.load_task(s, task).await.unwrap(), Some(record()));
    let read = again.outcomes(s, task, 0..6).await.unwrap();
    assert_eq!(read[0], Some(outcomes[0].clone()));
    assert_eq!(read[1], None);
    assert_eq!(read[2], Some(outcomes[1].clone()));
    assert_eq!(read[5], Some(outcomes[2].clone()));
    assert_eq!(
        again.load_blob(s, "blob-5").await.unwrap().as_deref(),
        Some(&b"[1,2,3]"[..])
    );
    let context = again.load_context(s).await.unwrap().unwrap();
    assert_eq!(
        Value::Object(context.clone()),
        json!({"zeta": 26, "alpha": [1, 2], "middle": "m"})
    );
    let keys: Vec<&String> = context.keys().collect();
    assert_eq!(keys, ["zeta", "alpha", "middle"], "in the order written");
    assert_eq!(again.load_mappings(s).await.unwrap(), Some(mappings));
    assert_eq!(
        again.load_document(s).await.unwrap(),
        Some(("run-1".to_string(), b"{\"groups\":[]}".to_vec()))
    );
    assert_eq!(
        again.load_state(s).await.unwrap().as_deref(),
        Some(&b"{\"status\":\"running\"}"[..])
    );
    assert_eq!(
        again
            .action_note(s, "agency_action/0/9")
            .await
            .unwrap()
            .as_deref(),
        Some("attached:run-1")
    );
    assert!(again.cancel_requested(s, "run-1").await.unwrap());
    assert_eq!(
        again.load_result("done").await.unwrap(),
        Some(json!({"status": "completed"}))
    );
    assert_eq!(again.sessions(10).await.unwrap()[0].0, s);
    // The fence came back: a write with an older token is refused.
    assert!(matches!(
        again.start_run(s, "run-2", Fence::Token("token-0")).await,
        Err(events::Error::Fenced { .. })
    ));
    // The recording rule holds across the reopening: a stored success is final.
    let late = [outcome(
        0,
        2,
        Status::Failed(taskgroup::Failure::error("late")),
    )];
    assert_eq!(
        again
            .record_outcomes(s, task, "run-1", &late, None)
            .await
            .unwrap(),
        [false]
    );

    // Cleanup is kept too: the working state goes, the result stays.
    again.cleanup(s, Fence::Open).await.unwrap();
    drop(again);
    let cleaned = open(&path).await;
    assert_eq!(cleaned.current_run(s).await.unwrap(), None);
    assert_eq!(cleaned.load_task(s, task).await.unwrap(), None);
    assert_eq!(cleaned.outcomes(s, task, 0..1).await.unwrap(), [None]);
    assert_eq!(cleaned.load_context(s).await.unwrap(), None);
    assert!(cleaned.load_result("done").await.unwrap().is_some());
}

#[tokio::test]
async fn one_writer_at_a_time_and_readers_see_the_last_checkpoint() {
    let path = state_file("writers.db");
    let store = open(&path).await;
    let error = FileStore::open(&path, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("another process has it open for writing"),
        "{error}"
    );
    store
        .publish_result("r", b"{\"status\":\"partial\"}", b"{}", Fence::Open)
        .await
        .unwrap();
    store.start_run("later", "run", Fence::Open).await.unwrap();
    let snapshot = FileStore::open_read_only(&path).unwrap();
    assert_eq!(
        snapshot.load_result("r").await.unwrap(),
        Some(json!({"status": "partial"})),
        "a stored result is checkpointed before publish_result returns"
    );
    // Within a checkpoint interval, the rest is there too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = FileStore::open_read_only(&path).unwrap();
        if snapshot.current_run("later").await.unwrap().is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never checkpointed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(store);
    open(&path).await;
    let missing = FileStore::open_read_only(&state_file("none.db")).unwrap_err();
    assert!(missing.to_string().contains("no such file"), "{missing}");
}

/// The task manager on a state file (issue 30, finding 18): it conforms, and a store opened
/// again from the file holds its tasks, their statuses, counts, claims and metadata.
#[tokio::test]
async fn the_task_manager_conforms_on_a_state_file_and_is_read_back() {
    use events::{TaskFilter, TaskState, Wanted};
    let path = state_file("tasks.db");
    let store = open(&path).await;
    conformance::task_suite(&*store, "file-tasks").await;
    conformance::workflow_claim_suite(&*store, "file-wanted").await;
    conformance::listing_suite(&*store, "file-listing").await;
    conformance::agent_suite(&*store, "file-agents").await;
    let summary = store.task_summary("file-listing-listed").await.unwrap();
    let listed = store
        .task_list("file-listing-listed", &TaskFilter::default(), 0, 100)
        .await
        .unwrap();
    let metadata = store
        .workflow_metadata("file-listing-listed", &Map::new())
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    drop(store);

    let reopened = open(&path).await;
    assert_eq!(
        reopened.task_summary("file-listing-listed").await.unwrap(),
        summary
    );
    let again = reopened
        .task_list("file-listing-listed", &TaskFilter::default(), 0, 100)
        .await
        .unwrap();
    assert_eq!(again, listed);
    assert_eq!(
        reopened
            .workflow_metadata("file-listing-listed", &Map::new())
            .await
            .unwrap(),
        metadata
    );
    // Waiting tasks are claimed from the file as they were left: the pending ones of type `lx`.
    let types = ["file-listing-lx".to_string()];
    let wanted = Wanted {
        types: &types,
        workflow: Some("file-listing-listed"),
    };
    let claimed = reopened.agent_claim("a", wanted, "tok").await.unwrap();
    assert_eq!(claimed.unwrap().item.id, "file-listing-n0");
    let task = reopened.task_get("file-listing-n0").await.unwrap().unwrap();
    assert_eq!(task.status, TaskState::InProgress);
}
