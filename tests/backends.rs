//! The shared backend suite against the real servers: Redis as the `Store`, the Kafka-compatible
//! broker as the `Broker`. The in-memory twins pass the same suite in `crates/events`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use events::prelude::*;
use events::{conformance, Broker as _, KafkaBroker, KafkaOptions, RedisStore};
use integration_tests::{kafka_brokers, redis_url, unique};
use std::time::Duration;

#[tokio::test]
async fn redis_store_conforms() {
    let store = RedisStore::connect(&redis_url())
        .await
        .expect("redis answers (run scripts/services.sh up)");
    conformance::store_suite(&store, &unique("conformance")).await;
}

#[tokio::test]
async fn redis_store_keeps_successes_for_a_rerun() {
    let store = RedisStore::connect(&redis_url()).await.unwrap();
    conformance::rerun_suite(&store, &unique("rerun")).await;
}

#[tokio::test]
async fn redis_store_keeps_results_by_reference() {
    let store = RedisStore::connect(&redis_url()).await.unwrap();
    conformance::kept_results_suite(&store, &unique("kept")).await;
}

#[tokio::test]
async fn redis_store_memoizes() {
    let store = RedisStore::connect(&redis_url()).await.unwrap();
    conformance::memo_suite(&store, &format!("{}:", unique("memo"))).await;
}

/// A Redis connection, and the keys session `session` has in Redis now.
async fn session_keys(session: &str) -> (redis::aio::MultiplexedConnection, Vec<String>) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("agency:{{{session}}}:*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    (connection, keys)
}

#[tokio::test]
async fn redis_store_claims_conform() {
    let store = RedisStore::connect(&redis_url()).await.unwrap();
    let session = unique("claim");
    conformance::claim_suite(&store, &session).await;
    // What is left is the origin and the fence, which expire like a result.
    let (mut connection, mut left) = session_keys(&session).await;
    left.sort();
    assert_eq!(
        left,
        vec![
            format!("agency:{{{session}}}:fence"),
            format!("agency:{{{session}}}:origin")
        ]
    );
    for key in &left {
        let ttl: i64 = redis::cmd("TTL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} expires");
    }
}

/// Working state left behind (a run abandoned for good) does not stay for ever: every working
/// key expires within 7 days of its last write.
#[tokio::test]
async fn redis_working_keys_expire() {
    use events::{Fence, Outcome, Status, TaskRef};
    use serde_json::json;
    let store = RedisStore::connect(&redis_url()).await.unwrap();
    let session = unique("expiry");
    let task = TaskRef { group: 0, task: 0 };
    let record = conformance::one_task_record("run");
    let map = json!({"k": 1}).as_object().cloned().unwrap();
    store
        .save_task(&session, task, &record, Fence::Open)
        .await
        .unwrap();
    store.start_run(&session, "run", Fence::Open).await.unwrap();
    store
        .save_document(&session, "run", b"{}", Fence::Open)
        .await
        .unwrap();
    assert_eq!(
        store.request_cancel(&session).await.unwrap().as_deref(),
        Some("run")
    );
    store
        .save_context(&session, &map, Fence::Open)
        .await
        .unwrap();
    store
        .save_mappings(&session, &map, Fence::Open)
        .await
        .unwrap();
    store
        .save_blob(&session, "0:0:0:1", b"big".to_vec())
        .await
        .unwrap();
    let outcome = Outcome {
        instance: 0,
        attempt: 1,
        status: Status::Succeeded(json!(1)),
    };
    let accepted = store
        .record_outcomes(&session, task, "run", &[outcome], None)
        .await
        .unwrap();
    assert_eq!(accepted, [true]);
    let (mut connection, keys) = session_keys(&session).await;
    assert_eq!(keys.len(), 9, "{keys:?}");
    for key in &keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 7 * 24 * 3600, "{key}: TTL {ttl}");
    }
    store.cleanup(&session, Fence::Open).await.unwrap();
    assert!(session_keys(&session).await.1.is_empty());
}

#[tokio::test]
async fn redis_cleanup_leaves_no_working_keys() {
    let store = RedisStore::connect(&redis_url()).await.unwrap();
    let session = unique("cleanup");
    conformance::store_suite(&store, &session).await;
    let (mut connection, left) = session_keys(&session).await;
    assert!(left.is_empty(), "working keys left after cleanup: {left:?}");
    // A result is kept after cleanup, with an expiry.
    events::Results::publish_result(
        &store,
        &session,
        br#"{"status": "completed"}"#,
        br#"{"status": "completed"}"#,
        events::Fence::Open,
    )
    .await
    .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("agency:result:{{{session}}}"))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(ttl > 0, "the result is kept with an expiry, got TTL {ttl}");
}

fn kafka_options() -> KafkaOptions {
    KafkaOptions {
        session_timeout: Duration::from_secs(6),
        max_poll_interval: Duration::from_secs(10),
        ..integration_tests::kafka_options()
    }
}

#[tokio::test]
async fn kafka_broker_conforms() {
    let broker = KafkaBroker::connect(kafka_options()).unwrap();
    conformance::broker_suite(&broker, &unique("conformance")).await;
    // Deployments sharing a Redis tell their topics apart by the cluster's address.
    assert_eq!(
        broker.qualified("agency_dispatch"),
        format!("{}/agency_dispatch", kafka_brokers())
    );
}

#[tokio::test]
async fn kafka_committed_offsets_survive_a_new_consumer() {
    // A message committed by one member is not redelivered to the next member of its group.
    let broker = KafkaBroker::connect(KafkaOptions {
        partitions: 1,
        ..kafka_options()
    })
    .unwrap();
    let topic = unique("offsets");
    let group = unique("group");
    broker
        .publish(&topic, "k", b"first".to_vec())
        .await
        .unwrap();
    broker
        .publish(&topic, "k", b"second".to_vec())
        .await
        .unwrap();
    {
        let mut consumer = broker.subscribe(&topic, &group).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.payload, b"first");
        consumer.commit(&first).await.unwrap();
        // Auto-commit sends stored offsets every second; give it one round.
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    let mut consumer = broker.subscribe(&topic, &group).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.payload, b"second", "the committed message came back");
}

#[tokio::test]
async fn a_dropped_redis_subscription_is_restored_and_reported() {
    use events::{Event, EventManager, Source};
    let store = std::sync::Arc::new(RedisStore::connect(&redis_url()).await.unwrap());
    let channel = unique("agency:test:flaky");
    let manager = EventManager::new(store.clone(), None);
    let stop = tokio_util::sync::CancellationToken::new();
    let mut events = manager
        .subscribe(vec![Source::Channel(channel.clone())], stop.clone())
        .await
        .unwrap();
    store.publish(&channel, b"before".to_vec()).await.unwrap();
    assert_eq!(
        events.recv().await.unwrap(),
        Event::Message {
            source: Source::Channel(channel.clone()),
            payload: b"before".to_vec()
        }
    );

    // Drop every pub/sub connection on the server, as a network break or restart would.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next,
        Event::Resubscribed {
            source: Source::Channel(channel.clone())
        }
    );

    store.publish(&channel, b"after".to_vec()).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next,
        Event::Message {
            source: Source::Channel(channel),
            payload: b"after".to_vec()
        }
    );
    stop.cancel();
}

#[tokio::test]
async fn redis_agent_queue_conforms() {
    let store = RedisStore::connect(&redis_url()).await.unwrap();
    conformance::agent_suite(&store, &unique("agents")).await;
}

#[tokio::test]
async fn redis_task_manager_conforms() {
    let store = RedisStore::connect(&redis_url()).await.unwrap();
    conformance::task_suite(&store, &unique("tasks")).await;
}

/// Claims within a workflow, and listings, beside the other tests; claims of any type on a
/// database of their own (they would take other tests' items), emptied first.
#[tokio::test]
async fn redis_claims_and_listings_conform() {
    let store = RedisStore::connect(&redis_url()).await.unwrap();
    conformance::workflow_claim_suite(&store, &unique("wanted")).await;
    conformance::listing_suite(&store, &unique("listing")).await;
    let own = format!("{}/7", redis_url().trim_end_matches('/'));
    let client = redis::Client::open(own.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut connection)
        .await
        .unwrap();
    let store = RedisStore::connect(&own).await.unwrap();
    conformance::any_claim_suite(&store, &unique("any")).await;
}

/// Bad Redis state (B-list): a report no one can read is dropped with a warning and does not
/// hold back the reports beside it; a settle with a report of the wrong shape (a client's bug)
/// is refused by the script and changes nothing.
#[tokio::test]
async fn an_unreadable_agent_report_is_dropped_and_the_others_are_recorded() {
    use events::{AgentItem, AgentOrigin, AgentReport};
    let store = RedisStore::connect(&redis_url()).await.unwrap();
    let kind = unique("corrupt-reports");
    let item = AgentItem {
        id: format!("{kind}|run|0|0|0|1"),
        kind: kind.clone(),
        input: serde_json::json!({}),
        claim_timeout_ms: 60_000,
        origin: AgentOrigin::Instance {
            session: kind.clone(),
            run: "run".into(),
            group: 0,
            task: 0,
            task_id: "t".into(),
            instance: 0,
            attempt: 1,
        },
    };
    store
        .agent_offer(std::slice::from_ref(&item))
        .await
        .unwrap();
    let token = format!("{kind}-token");
    let claim = store
        .agent_claim(
            "a",
            events::Wanted {
                types: std::slice::from_ref(&kind),
                workflow: None,
            },
            &token,
        )
        .await
        .unwrap()
        .unwrap();
    // A script call with a report of the wrong shape: refused, the claim still holds.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let settle = format!(
        "{}\n{}",
        include_str!("../crates/events/lua/agents/common.lua"),
        include_str!("../crates/events/lua/agents/settle.lua")
    );
    let refused: redis::RedisResult<redis::Value> = redis::Script::new(&settle)
        .key("agency:{agents}:items")
        .arg(&claim.token)
        .arg(r#"{"done": 1}"#)
        .arg("completed")
        .arg("result")
        .arg("1")
        .invoke_async(&mut connection)
        .await;
    let said = refused.unwrap_err().to_string();
    assert!(said.contains("a report must be"), "{said}");
    let done = AgentReport::Completed(serde_json::json!({"ok": true}));
    store
        .agent_settle(&claim.token, &done)
        .await
        .unwrap()
        .unwrap();
    // Beside the good report, an unreadable one.
    let bad = format!("{kind}|run|0|0|1|1");
    redis::pipe()
        .hset("agency:{agents}:reports", &bad, "{not json")
        .zadd("agency:{agents}:reports:due", &bad, 0)
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    let taken = store
        .agent_reports(10_000, Duration::from_secs(30))
        .await
        .unwrap();
    let ours: Vec<_> = taken.iter().filter(|r| r.item.kind == kind).collect();
    assert_eq!(ours.len(), 1);
    assert_eq!((&ours[0].item.id, &ours[0].outcome), (&item.id, &done));
    let left: Option<String> = redis::cmd("HGET")
        .arg("agency:{agents}:reports")
        .arg(&bad)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(left, None, "the unreadable report is gone");
    store
        .agent_reported(std::slice::from_ref(&item.id))
        .await
        .unwrap();
}
