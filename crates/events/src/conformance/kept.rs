//! Results kept by reference ([`Outcomes::keep_results`]): what cleanup leaves, and for how long.

use super::outcome;
use crate::messages::{TaskRecord, TaskRef};
use crate::store::{Fence, Store};
use serde_json::json;

const RUN: &str = "agency_action/5/1";

fn record(instances: u64) -> TaskRecord {
    TaskRecord {
        run: RUN.into(),
        task_id: "t".into(),
        group_id: "g".into(),
        executor: "echo".into(),
        input: json!({}),
        expansion_config: None,
        context: json!({}),
        timeout_ms: None,
        concurrency: None,
        instances,
        memo_key: None,
        memo_ttl_s: None,
        upstream: Vec::new(),
        agent: None,
        maps_results_of: None,
    }
}

/// Under session `session`: the outcomes of a task marked kept, and the session's blobs,
/// survive its cleanup (by a token, and by its run) while another task's go; the cleanup after
/// that (a new run of the id) deletes them; a stale token cannot mark.
pub async fn kept_results_suite(store: &dyn Store, session: &str) {
    let kept = TaskRef { group: 0, task: 0 };
    let other = TaskRef { group: 0, task: 1 };
    let origin: crate::Origin = "intake/0/5".parse().expect("an origin");
    let claim = |token: &'static str| {
        store.claim(
            session,
            "c",
            &origin,
            token,
            std::time::Duration::from_secs(30),
        )
    };
    let _ = claim("k1").await.expect("claim");
    for cleanup_by_run in [false, true] {
        store
            .start_run(session, RUN, Fence::Token("k1"))
            .await
            .expect("start the run");
        for task in [kept, other] {
            store
                .save_task(session, task, &record(3), Fence::Token("k1"))
                .await
                .expect("save task");
            let outcomes = [
                outcome(0, 1, true),
                outcome(1, 1, true),
                outcome(2, 2, true),
            ];
            let accepted = store
                .record_outcomes(session, task, RUN, &outcomes, None)
                .await
                .expect("record");
            assert_eq!(accepted, [true, true, true]);
        }
        store
            .save_blob(session, "0:0:1:1", b"[1]".to_vec())
            .await
            .expect("blob");
        store
            .keep_results(session, kept, Fence::Token("k1"))
            .await
            .expect("keep the results");
        if cleanup_by_run {
            store
                .cleanup_run(session, RUN)
                .await
                .expect("cleanup by run");
        } else {
            store
                .cleanup(session, Fence::Token("k1"))
                .await
                .expect("cleanup");
        }
        let read = store.outcomes(session, kept, 1..4).await.expect("outcomes");
        assert_eq!(
            read,
            [Some(outcome(1, 1, true)), Some(outcome(2, 2, true)), None],
            "the kept task's outcomes stay (cleanup by run: {cleanup_by_run})"
        );
        assert_eq!(
            store
                .outcomes(session, other, 0..1)
                .await
                .expect("outcomes"),
            [None],
            "another task's go"
        );
        assert_eq!(store.load_task(session, kept).await.expect("task"), None);
        assert_eq!(
            store.load_blob(session, "0:0:1:1").await.expect("blob"),
            Some(b"[1]".to_vec()),
            "the session's blobs stay with them"
        );
        // The next cleanup (a new run of the id) takes them.
        store
            .cleanup(session, Fence::Token("k1"))
            .await
            .expect("cleanup again");
        assert_eq!(
            store.outcomes(session, kept, 0..1).await.expect("outcomes"),
            [None]
        );
        assert_eq!(
            store.load_blob(session, "0:0:1:1").await.expect("blob"),
            None
        );
    }
    // A later claim fences the earlier token out.
    let _ = claim("k2").await.expect("claim again");
    let stale = store.keep_results(session, kept, Fence::Token("k1")).await;
    assert!(
        matches!(stale, Err(crate::Error::Fenced { .. })),
        "a stale token marks nothing: {stale:?}"
    );
    store
        .release(session, "c")
        .await
        .expect("release the lease");
}
