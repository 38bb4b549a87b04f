//! Leases, origins and fences: the part of the store suite a coordinator's lease protocol
//! relies on.

use crate::error::{Error, Result};
use crate::messages::TaskRef;
use crate::store::{Claim, Fence, Renewal, Store};
use serde_json::json;
use std::time::Duration;

/// Leases and origins: one coordinator runs a session at a time, a redelivered action resumes
/// or is recognised as finished, a resubmission under the same id starts over. Each claim stores
/// its token as the session's fence, and writes with a replaced token are refused.
pub async fn claim_suite(store: &dyn Store, session: &str) {
    let lease = Duration::from_secs(30);
    // Each claim's token is the claimer and the step: `a1` is `a`'s first claim.
    let claim = |owner: &'static str, origin: &'static str, token: &'static str| async move {
        let origin: crate::Origin = origin.parse().expect("an origin");
        store.claim(session, owner, &origin, token, lease).await
    };
    let renew = |owner: &'static str, token: &'static str| async move {
        store
            .renew(session, owner, token, lease)
            .await
            .expect("renew")
    };
    // A session the store knows nothing of (as after it lost its data) cannot be renewed.
    assert_eq!(renew("a", "a0").await, Renewal::StateLost);
    assert_eq!(
        claim("a", "intake/0/1", "a1").await.expect("claim"),
        Claim::Fresh
    );
    assert_eq!(
        claim("b", "intake/0/1", "b1").await.expect("claim"),
        Claim::Held
    );
    assert_eq!(renew("b", "b1").await, Renewal::Taken);
    assert_eq!(renew("a", "a1").await, Renewal::Held);
    // The same action again, no result yet: resume.
    assert_eq!(
        claim("a", "intake/0/1", "a2").await.expect("claim"),
        Claim::Resume
    );
    let result = json!({"session_id": session, "status": "completed"}).to_string();
    store
        .publish_result(session, result.as_bytes(), b"{}", Fence::Token("a2"))
        .await
        .expect("publish result");
    assert_eq!(
        claim("a", "intake/0/1", "a3").await.expect("claim"),
        Claim::Finished
    );
    // Another action with the same id: the earlier result no longer answers.
    assert_eq!(
        claim("a", "intake/3/9", "a4").await.expect("claim"),
        Claim::Stale
    );
    assert_eq!(store.load_result(session).await.expect("load result"), None);
    // An older action of the same partition, delivered again, is superseded.
    assert_eq!(
        claim("b", "intake/3/8", "b2").await.expect("claim"),
        Claim::Superseded
    );
    assert_eq!(
        claim("a", "intake/3/9", "a5").await.expect("claim"),
        Claim::Resume
    );
    // Only the holder releases.
    store.release(session, "b").await.expect("release");
    assert_eq!(
        claim("b", "intake/3/9", "b3").await.expect("claim"),
        Claim::Held
    );
    store.release(session, "a").await.expect("release");
    assert_eq!(
        claim("b", "intake/3/9", "b4").await.expect("claim"),
        Claim::Resume
    );
    // A lease nobody renews lapses, and another coordinator takes the session over.
    let short = Duration::from_millis(50);
    assert_eq!(
        store.renew(session, "b", "b4", short).await.expect("renew"),
        Renewal::Held
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        claim("c", "intake/3/9", "c1").await.expect("claim"),
        Claim::Resume
    );
    assert_eq!(renew("b", "b4").await, Renewal::Taken);
    fenced_writes_are_refused(store, session, "b4", "c1").await;
    // `b`, paused past its lease, comes back after `c` let go: its token was replaced, so it
    // cannot take the lease again.
    store.release(session, "c").await.expect("release");
    assert_eq!(renew("b", "b4").await, Renewal::Taken);
    store
        .cleanup(session, Fence::Token("c1"))
        .await
        .expect("cleanup");
}

/// Every write a coordinator fences: with `stale` (a token a later claim replaced) each is
/// refused as [`Error::Fenced`] and changes nothing; with `current`, or with no fence, each goes
/// ahead.
async fn fenced_writes_are_refused(store: &dyn Store, session: &str, stale: &str, current: &str) {
    let task = TaskRef { group: 0, task: 0 };
    let record = super::one_task_record("fenced");
    let context = json!({"k": "current"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let fenced = |written: Result<()>, what: &str| match written {
        Err(Error::Fenced { session: named }) => assert_eq!(named, session, "{what}"),
        other => panic!("{what} with a replaced token: {other:?}"),
    };
    for fence in [Fence::Token(current), Fence::Open] {
        store
            .save_task(session, task, &record, fence)
            .await
            .expect("save task");
        store
            .save_context(session, &context, fence)
            .await
            .expect("save context");
        store
            .set_context(session, "k", &json!("current"), fence)
            .await
            .expect("set context");
        store
            .save_mappings(session, &context, fence)
            .await
            .expect("save mappings");
    }
    let stale = Fence::Token(stale);
    let overwrite = json!({"k": "stale"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut other = record.clone();
    other.run = "stale".into();
    fenced(
        store.save_task(session, task, &other, stale).await,
        "save_task",
    );
    fenced(
        store.save_context(session, &overwrite, stale).await,
        "save_context",
    );
    fenced(
        store
            .set_context(session, "k", &json!("stale"), stale)
            .await,
        "set_context",
    );
    fenced(
        store.save_mappings(session, &overwrite, stale).await,
        "save_mappings",
    );
    fenced(
        store.publish_result(session, b"{}", b"{}", stale).await,
        "publish_result",
    );
    fenced(store.delete_result(session, stale).await, "delete_result");
    fenced(store.cleanup(session, stale).await, "cleanup");
    assert_eq!(
        store
            .load_task(session, task)
            .await
            .expect("load task")
            .map(|r| r.run),
        Some("fenced".to_string())
    );
    assert_eq!(
        store.load_context(session).await.expect("load context"),
        Some(context.clone())
    );
    assert_eq!(
        store.load_mappings(session).await.expect("load mappings"),
        Some(context)
    );
    assert_eq!(store.load_result(session).await.expect("load result"), None);
}
