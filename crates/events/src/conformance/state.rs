//! [`Contexts`](crate::Contexts), [`Results`](crate::Results) and
//! [`Documents`](crate::Documents): what a session's coordinator and its clients read back.

use super::{next_result, publish, received, RUN};
use crate::store::{progress_channel, Contexts, Fence, Store, RESULTS_CHANNEL};
use serde_json::{json, Map};

/// The context and the mappings round trip; one key is set leaving the others.
pub async fn contexts_suite(store: &dyn Contexts, session: &str) {
    let mut context = Map::new();
    context.insert("users".into(), json!(["a", "b"]));
    store
        .save_context(session, &context, Fence::Open)
        .await
        .expect("save context");
    assert_eq!(
        store.load_context(session).await.expect("load context"),
        Some(context.clone())
    );
    store
        .set_context(session, "fetch", &json!({"n": 2}), Fence::Open)
        .await
        .expect("set context key");
    let mut expected = context.clone();
    expected.insert("fetch".into(), json!({"n": 2}));
    assert_eq!(
        store.load_context(session).await.expect("load context"),
        Some(expected)
    );
    store
        .save_mappings(session, &context, Fence::Open)
        .await
        .expect("save mappings");
    assert_eq!(
        store.load_mappings(session).await.expect("load mappings"),
        Some(context)
    );
}

/// Every check of results and blobs, each under a session of its own named after `session`.
pub async fn results_suite(store: &dyn Store, session: &str) {
    a_result_is_stored_then_announced_once(store, &format!("{session}-result")).await;
    blobs_round_trip(store, &format!("{session}-blob")).await;
}

/// A result is stored, then announced (other sessions may announce theirs meanwhile): the
/// announcement, not the result, goes on pub/sub. Stored again (a retry whose answer was
/// lost), it is not announced again: the next announcement of the session is the next
/// different result's.
async fn a_result_is_stored_then_announced_once(store: &dyn Store, session: &str) {
    let result = json!({"session_id": session, "status": "completed", "context": {"big": [1, 2]}});
    let announced = json!({"session_id": session, "status": "completed"});
    let failed = json!({"session_id": session, "status": "failed"});
    let mut results = store
        .subscribe(RESULTS_CHANNEL)
        .await
        .expect("subscribe to results");
    publish(store, session, &result, &announced).await;
    assert_eq!(next_result(results.as_mut(), session).await, announced);
    publish(store, session, &result, &announced).await;
    publish(store, session, &failed, &failed).await;
    assert_eq!(
        next_result(results.as_mut(), session).await["status"],
        "failed",
        "the same result is announced once"
    );
    publish(store, session, &result, &announced).await;
    assert_eq!(
        store.load_result(session).await.expect("load result"),
        Some(result)
    );
}

async fn blobs_round_trip(store: &dyn Store, session: &str) {
    store
        .save_blob(session, "0:1:7:1", b"large".to_vec())
        .await
        .expect("save blob");
    assert_eq!(
        store.load_blob(session, "0:1:7:1").await.expect("blob"),
        Some(b"large".to_vec())
    );
    assert_eq!(
        store.load_blob(session, "0:1:8:1").await.expect("blob"),
        None
    );
}

/// Every check of documents, notes and live states, each under a session of its own.
pub async fn documents_suite(store: &dyn Store, session: &str) {
    documents_and_notes_round_trip(store, &format!("{session}-document")).await;
    a_pending_state_does_not_overwrite_a_run(store, &format!("{session}-state")).await;
    a_withdrawal_ends_only_by_its_own_mark(store, &format!("{session}-withdrawn")).await;
}

/// A withdrawal is there until the cancel action carrying its mark ends it; a later mark
/// replaces an earlier one, which then ends nothing; cleanup does not touch it.
async fn a_withdrawal_ends_only_by_its_own_mark(store: &dyn Store, session: &str) {
    assert_eq!(store.withdrawal(session).await.expect("none yet"), None);
    store.withdraw(session, "m1").await.expect("withdraw");
    assert_eq!(
        store.withdrawal(session).await.expect("read"),
        Some("m1".into())
    );
    store.withdraw(session, "m2").await.expect("withdraw again");
    store.end_withdrawal(session, "m1").await.expect("end m1");
    assert_eq!(
        store.withdrawal(session).await.expect("read"),
        Some("m2".into()),
        "an earlier mark ends nothing"
    );
    store.cleanup(session, Fence::Open).await.expect("cleanup");
    assert_eq!(
        store.withdrawal(session).await.expect("read"),
        Some("m2".into()),
        "not working state"
    );
    store.end_withdrawal(session, "m2").await.expect("end m2");
    assert_eq!(store.withdrawal(session).await.expect("ended"), None);
}

async fn documents_and_notes_round_trip(store: &dyn Store, session: &str) {
    store
        .save_document(session, RUN, br#"{"groups": []}"#, Fence::Open)
        .await
        .expect("save the document");
    assert_eq!(
        store.load_document(session).await.expect("the document"),
        Some((RUN.to_string(), br#"{"groups": []}"#.to_vec()))
    );
    let note = format!("attached:{RUN}");
    store
        .note_action(session, "agency_action/3/14", &note)
        .await
        .expect("note an action");
    assert_eq!(
        store
            .action_note(session, "agency_action/3/14")
            .await
            .expect("read a note"),
        Some(note)
    );
    assert_eq!(
        store
            .action_note(session, "agency_action/3/15")
            .await
            .expect("read no note"),
        None
    );
}

/// A submission's `pending` does not overwrite a run's state; a run's state is also announced
/// on the session's progress channel; the session is listed among the recent ones, with the
/// store's time, newest first.
async fn a_pending_state_does_not_overwrite_a_run(store: &dyn Store, session: &str) {
    let before = store.now_ms().await.expect("the store's clock");
    let save =
        |state: &'static [u8], replace| store.save_state(session, state, replace, Fence::Open);
    save(br#"{"status": "pending"}"#, false)
        .await
        .expect("pending");
    save(br#"{"status": "running"}"#, true)
        .await
        .expect("running");
    save(br#"{"status": "pending"}"#, false)
        .await
        .expect("kept");
    assert_eq!(
        store.load_state(session).await.expect("load the state"),
        Some(br#"{"status": "running"}"#.to_vec())
    );
    let mut progress = store
        .subscribe(&progress_channel(session))
        .await
        .expect("subscribe to progress");
    let again = br#"{"status": "running", "n": 2}"#;
    save(again, true).await.expect("running again");
    // On a Redis Cluster the announcement of the state saved before subscribing may still
    // arrive (the cluster bus relays it late); this one must follow within the bound.
    while received(progress.as_mut()).await != again {}
    let listed = store.sessions(10_000).await.expect("list sessions");
    let at = listed
        .iter()
        .find(|(id, _)| id == session)
        .map(|(_, at)| *at)
        .expect("the session is listed");
    assert!(at >= before, "listed at {at}, before {before}");
    assert!(
        listed.windows(2).all(|pair| pair[0].1 >= pair[1].1),
        "newest first"
    );
}
