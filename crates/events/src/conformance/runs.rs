//! [`Runs`](crate::Runs) apart from leases (`claims.rs`): the current run, the cancel and pause
//! marks, and what cleanup deletes and leaves.

use super::{outcome, publish, started, started_with_task, EARLIER, RUN, TASK};
use crate::store::{Fence, RangeStep, Store};
use serde_json::{json, Map};

/// Every check of the capability, each under a session of its own named after `session`.
pub async fn runs_suite(store: &dyn Store, session: &str) {
    a_run_is_current_once_started(store, &format!("{session}-start")).await;
    a_cancel_marks_the_current_run_only(store, &format!("{session}-cancel")).await;
    a_pause_marks_the_current_run_until_resumed(store, &format!("{session}-pause")).await;
    cleaning_up_a_run_leaves_a_later_one(store, &format!("{session}-run-cleanup")).await;
    cleanup_deletes_the_working_state_not_the_result(store, &format!("{session}-cleanup")).await;
}

/// No run yet: nothing to cancel, and nothing is written; then the started run is current.
async fn a_run_is_current_once_started(store: &dyn Store, session: &str) {
    assert_eq!(store.current_run(session).await.expect("run"), None);
    assert_eq!(store.request_cancel(session).await.expect("cancel"), None);
    assert_eq!(store.current_run(session).await.expect("run"), None);
    started(store, session).await;
    assert_eq!(
        store.current_run(session).await.expect("run"),
        Some(RUN.to_string())
    );
    assert!(!store.cancel_requested(session, RUN).await.expect("cancel"));
}

async fn a_cancel_marks_the_current_run_only(store: &dyn Store, session: &str) {
    started(store, session).await;
    assert_eq!(
        store.request_cancel(session).await.expect("cancel"),
        Some(RUN.to_string())
    );
    assert!(store.cancel_requested(session, RUN).await.expect("cancel"));
    assert!(!store
        .cancel_requested(session, EARLIER)
        .await
        .expect("another run cancelled?"));
}

async fn a_pause_marks_the_current_run_until_resumed(store: &dyn Store, session: &str) {
    let nobody = format!("{session}-nobody");
    assert_eq!(
        store.request_pause(&nobody, true).await.expect("pause"),
        None
    );
    assert!(!store.pause_requested(&nobody, RUN).await.expect("paused"));
    started(store, session).await;
    assert_eq!(
        store.request_pause(session, true).await.expect("pause"),
        Some(RUN.to_string())
    );
    assert!(store.pause_requested(session, RUN).await.expect("paused"));
    assert!(!store
        .pause_requested(session, EARLIER)
        .await
        .expect("paused"));
    store.request_pause(session, false).await.expect("resume");
    assert!(!store.pause_requested(session, RUN).await.expect("paused"));
}

/// Cleaning up another run's state leaves this run's; cleaning up this run's deletes its
/// working state, its marks with it, and leaves the notes on actions.
async fn cleaning_up_a_run_leaves_a_later_one(store: &dyn Store, session: &str) {
    started_with_task(store, session).await;
    store
        .save_document(session, RUN, br#"{"groups": []}"#, Fence::Open)
        .await
        .expect("save the document");
    store
        .save_state(session, br#"{"status": "running"}"#, true, Fence::Open)
        .await
        .expect("save the state");
    store
        .note_action(session, RUN, &format!("attached:{RUN}"))
        .await
        .expect("note an action");
    store.request_cancel(session).await.expect("cancel");
    store
        .cleanup_run(session, EARLIER)
        .await
        .expect("clean up another run");
    assert!(
        store
            .load_task(session, TASK)
            .await
            .expect("load")
            .is_some(),
        "the state of the current run stays"
    );
    store
        .cleanup_run(session, RUN)
        .await
        .expect("clean up the current run");
    assert_eq!(store.load_task(session, TASK).await.expect("load"), None);
    assert_eq!(store.current_run(session).await.expect("run"), None);
    assert_eq!(store.load_document(session).await.expect("document"), None);
    assert_eq!(store.load_state(session).await.expect("state"), None);
    assert!(store
        .action_note(session, RUN)
        .await
        .expect("a note after cleanup")
        .is_some());
    assert!(!store
        .cancel_requested(session, RUN)
        .await
        .expect("cancelled after cleanup?"));
}

/// Cleanup deletes tasks, outcomes, blobs and context, not the result; a range of the run
/// delivered after it cannot bring its state back. Deleting the result is a step of its own.
async fn cleanup_deletes_the_working_state_not_the_result(store: &dyn Store, session: &str) {
    started_with_task(store, session).await;
    store
        .record_outcomes(session, TASK, RUN, &[outcome(0, 1, true)], None)
        .await
        .expect("record");
    let mut context = Map::new();
    context.insert("users".into(), json!(["a", "b"]));
    store
        .save_context(session, &context, Fence::Open)
        .await
        .expect("save context");
    store
        .save_blob(session, "0:1:7:1", b"large".to_vec())
        .await
        .expect("save blob");
    let result = json!({"session_id": session, "status": "completed"});
    publish(store, session, &result, &result).await;
    store.cleanup(session, Fence::Open).await.expect("cleanup");

    let late = store
        .record_outcomes(session, TASK, RUN, &[outcome(2, 9, true)], None)
        .await
        .expect("record after cleanup");
    assert_eq!(late, [false]);
    assert_eq!(
        store
            .track_range(session, RUN, "0:1:0:3:1", RangeStep::Started("w5"))
            .await
            .expect("track after cleanup"),
        None,
        "a range delivered after cleanup counts nothing"
    );
    assert_eq!(
        store.load_blob(session, "0:1:7:1").await.expect("blob"),
        None
    );
    assert_eq!(store.load_task(session, TASK).await.expect("task"), None);
    assert_eq!(
        store.outcomes(session, TASK, 0..1).await.expect("outcomes"),
        [None]
    );
    assert_eq!(store.load_context(session).await.expect("context"), None);
    assert_eq!(
        store.load_result(session).await.expect("result survives"),
        Some(result)
    );
    store
        .delete_result(session, Fence::Open)
        .await
        .expect("delete result");
    assert_eq!(store.load_result(session).await.expect("result"), None);
}
