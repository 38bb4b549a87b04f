//! Waiting for a submitted run's result: a client gets its own run's result, never an earlier
//! or a later submission's under the same session id (issue #13, defect 3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agency::client::submit;
use agency::results::ResultWaiter;
use agency::Error;
use events::prelude::*;
use events::{Fence, MemoryBroker, MemoryStore};
use serde_json::json;
use std::time::Duration;
use taskgroup::SessionResult;

async fn publish(store: &MemoryStore, id: &str, run: &str, errors: &[&str]) {
    let mut result = SessionResult::failed(id, errors.iter().map(ToString::to_string).collect());
    result.run = Some(run.to_string());
    let bytes = serde_json::to_vec(&result).unwrap();
    store
        .publish_result(id, &bytes, br#"{"session_id": "ignored"}"#, Fence::Open)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_waiter_takes_its_own_runs_result_and_skips_an_earlier_runs() {
    let (broker, store) = (MemoryBroker::new(), MemoryStore::new());
    let doc = json!({"session_id": "same", "groups": [{"id": "g", "tasks": [{"id": "t", "executor": "noop"}]}]});
    let first = submit(&broker, &store, doc.clone()).await.unwrap();
    let second = submit(&broker, &store, doc).await.unwrap();
    assert_eq!(first.id, "same");
    assert!(
        second.run.supersedes(&first.run),
        "{first:?} then {second:?}"
    );

    let mut waiter = ResultWaiter::subscribe(&store).await.unwrap();
    let waiting = tokio::spawn({
        let store = store.clone();
        let run = second.run.clone();
        async move {
            waiter
                .wait(&store, "same", Some(&run), Some(Duration::from_secs(30)))
                .await
        }
    });
    // A late result of the first run is not the second's.
    publish(&store, "same", &first.run.to_string(), &["first"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "took the earlier run's result");
    publish(&store, "same", &second.run.to_string(), &["second"]).await;
    let result = waiting.await.unwrap().unwrap();
    assert_eq!(result.errors, ["second"]);
    assert_eq!(result.run, Some(second.run.to_string()));
}

#[tokio::test]
async fn a_waiter_whose_run_was_replaced_by_a_later_submission_is_told_so() {
    let (broker, store) = (MemoryBroker::new(), MemoryStore::new());
    let doc = json!({"session_id": "again", "groups": [{"id": "g", "tasks": [{"id": "t", "executor": "noop"}]}]});
    let first = submit(&broker, &store, doc.clone()).await.unwrap();
    let second = submit(&broker, &store, doc).await.unwrap();
    publish(&store, "again", &second.run.to_string(), &["second"]).await;
    // Both through the store (the announcement came before the wait) and through the channel.
    let mut waiter = ResultWaiter::subscribe(&store).await.unwrap();
    let error = waiter
        .wait(
            &store,
            "again",
            Some(&first.run),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Superseded { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        format!(
            "session again was submitted again (run {}) before run {} finished; that run's result will not come",
            second.run, first.run
        )
    );
    // Without a run to look for (`agency status`), the stored result is the answer.
    let any = waiter
        .wait(&store, "again", None, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(any.errors, ["second"]);
}

#[tokio::test]
async fn an_oversize_session_is_refused_at_submit_and_changes_nothing() {
    let (broker, store) = (MemoryBroker::new(), MemoryStore::new());
    publish(&store, "big", "agency_action/0/0", &["kept"]).await;
    let blob = "x".repeat(events::MAX_MESSAGE_BYTES);
    let doc = json!({"session_id": "big", "groups": [{"id": "g", "tasks": [{"id": "t", "executor": "echo", "input": blob}]}]});
    let error = submit(&broker, &store, doc).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("session big is ")
            && message
                .contains("bytes as an agency_action message, over the limit of 1000000 bytes"),
        "{message}"
    );
    let kept = store.load_result("big").await.unwrap().unwrap();
    assert_eq!(
        kept["errors"][0], "kept",
        "the earlier result is still there"
    );
}

#[tokio::test]
async fn a_waiter_of_an_attached_action_gets_the_run_it_joined_and_of_a_refused_one_the_reason() {
    let (broker, store) = (MemoryBroker::new(), MemoryStore::new());
    let doc = json!({"session_id": "joined", "groups": [{"id": "g", "tasks": [{"id": "t", "executor": "noop"}]}]});
    let first = submit(&broker, &store, doc.clone()).await.unwrap();
    let second = submit(&broker, &store, doc).await.unwrap();
    // A coordinator attached the second action to the first's run, which then finished.
    store
        .note_action(
            "joined",
            &second.run.to_string(),
            &format!("attached:{}", first.run),
        )
        .await
        .unwrap();
    publish(&store, "joined", &first.run.to_string(), &["first"]).await;
    let mut waiter = ResultWaiter::subscribe(&store).await.unwrap();
    let result = waiter
        .wait(
            &store,
            "joined",
            Some(&second.run),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(result.errors, ["first"]);

    let refused = submit(
        &broker,
        &store,
        json!({"session_id": "joined", "groups": []}),
    )
    .await
    .unwrap();
    store
        .note_action(
            "joined",
            &refused.run.to_string(),
            "refused:session joined is running",
        )
        .await
        .unwrap();
    let error = waiter
        .wait(
            &store,
            "joined",
            Some(&refused.run),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Refused { .. }), "{error}");
    assert_eq!(error.to_string(), "session joined is running");
}
