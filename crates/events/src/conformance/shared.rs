//! What sessions share: [`Membership`](crate::Membership), [`Memo`](crate::Memo) and
//! [`Notices`](crate::Notices).

use super::received;
use crate::store::{Membership, Memo, Notices};
use serde_json::json;
use std::time::Duration;

/// Heartbeats: the member is listed with what it said last, stamped by the store's clock, until
/// it is forgotten. `member` names it apart from other runs' members.
pub async fn membership_suite(store: &dyn Membership, member: &str) {
    let before = store.now_ms().await.expect("the store's clock");
    store
        .heartbeat(member, br#"{"role": "worker"}"#)
        .await
        .expect("heartbeat");
    store
        .heartbeat(member, br#"{"role": "worker", "running": 3}"#)
        .await
        .expect("heartbeat again");
    let members = store.members().await.expect("members");
    let (_, info, seen) = members
        .iter()
        .find(|(id, _, _)| *id == member)
        .expect("the member is listed");
    assert_eq!(info.as_slice(), br#"{"role": "worker", "running": 3}"#);
    assert!(*seen >= before, "seen at {seen}, before {before}");
    store.forget_member(member).await.expect("forget");
    assert!(!store
        .members()
        .await
        .expect("members")
        .iter()
        .any(|(id, _, _)| *id == member));
}

/// A subscription sees what is published on its channel in order; a pattern subscription sees
/// every matching channel and nothing else. `name` keeps the channels apart from others'.
pub async fn notices_suite(store: &dyn Notices, name: &str) {
    let channel = format!("agency:test:{name}");
    let mut subscription = store.subscribe(&channel).await.expect("subscribe");
    for payload in [&b"one"[..], b"two"] {
        store
            .publish(&channel, payload.to_vec())
            .await
            .expect("publish");
    }
    for expected in [&b"one"[..], b"two"] {
        assert_eq!(received(subscription.as_mut()).await, expected);
    }
    let prefix = format!("agency:test:{name}:");
    let mut matching = store
        .subscribe_pattern(&format!("{prefix}*"))
        .await
        .expect("subscribe to a pattern");
    for (channel, payload) in [
        (format!("{prefix}{{a}}"), &b"a"[..]),
        (format!("agency:other:{name}"), b"other"),
        (format!("{prefix}b"), b"b"),
    ] {
        store
            .publish(&channel, payload.to_vec())
            .await
            .expect("publish");
    }
    for expected in [&b"a"[..], b"b"] {
        assert_eq!(received(matching.as_mut()).await, expected);
    }
}

/// Memoized results: stored apart from sessions, read back, replaced, expired after their TTL,
/// and cleared by a literal prefix. `prefix` keeps this run's keys apart from others'.
pub async fn memo_suite(store: &dyn Memo, prefix: &str) {
    let key = |name: &str| format!("{prefix}{name}");
    let keys = [key("a"), key("b"), key("missing")];
    assert_eq!(
        store.memo_get(&keys).await.expect("memo get"),
        [None, None, None]
    );
    store
        .memo_put(&[(key("a"), json!({"n": 1})), (key("b"), json!([2]))], None)
        .await
        .expect("memo put");
    assert_eq!(
        store.memo_get(&keys).await.expect("memo get"),
        [Some(json!({"n": 1})), Some(json!([2])), None]
    );
    store
        .memo_put(&[(key("a"), json!("newer"))], None)
        .await
        .expect("memo put again");
    assert_eq!(
        store.memo_get(&keys[..1]).await.expect("memo get"),
        [Some(json!("newer"))]
    );
    // A short TTL: gone after it, while the others stay.
    store
        .memo_put(
            &[(key("brief"), json!(true))],
            Some(Duration::from_millis(100)),
        )
        .await
        .expect("memo put with a ttl");
    assert_eq!(
        store.memo_get(&[key("brief")]).await.expect("memo get"),
        [Some(json!(true))]
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store
            .memo_get(&[key("brief"), key("a")])
            .await
            .expect("memo get"),
        [None, Some(json!("newer"))]
    );
    // A prefix is literal: `*` in it matches only `*`.
    store
        .memo_put(
            &[
                (key("x*1"), json!(1)),
                (key("xy1"), json!(2)),
                (key("x*2"), json!(3)),
            ],
            None,
        )
        .await
        .expect("memo put");
    assert_eq!(store.memo_clear(&key("x*")).await.expect("memo clear"), 2);
    assert_eq!(
        store
            .memo_get(&[key("x*1"), key("xy1"), key("x*2")])
            .await
            .expect("memo get"),
        [None, Some(json!(2)), None]
    );
    assert_eq!(store.memo_clear(prefix).await.expect("memo clear"), 3);
    assert_eq!(
        store.memo_get(&keys).await.expect("memo get"),
        [None, None, None]
    );
    assert_eq!(store.memo_get(&[]).await.expect("memo get of nothing"), []);
}
