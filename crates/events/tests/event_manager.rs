//! The EventManager merges channels and topics into one stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use events::{Broker as _, Event, EventManager, MemoryBroker, MemoryStore, Notices as _, Source};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn channels_and_topics_merge_into_one_stream() {
    let store = Arc::new(MemoryStore::new());
    let broker = Arc::new(MemoryBroker::new());
    let manager = EventManager::new(store.clone(), Some(broker.clone()));
    let stop = CancellationToken::new();
    let channel = Source::Channel("agency:test:events".into());
    let topic = Source::Topic {
        topic: "events-topic".into(),
        group: "watchers".into(),
    };
    let mut events = manager
        .subscribe(vec![channel.clone(), topic.clone()], stop.clone())
        .await
        .unwrap();

    store
        .publish("agency:test:events", b"from redis".to_vec())
        .await
        .unwrap();
    broker
        .publish("events-topic", "k", b"from kafka".to_vec())
        .await
        .unwrap();
    let mut got = vec![events.recv().await.unwrap(), events.recv().await.unwrap()];
    got.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        got,
        vec![
            Event::Message {
                source: channel,
                payload: b"from redis".to_vec()
            },
            Event::Message {
                source: topic,
                payload: b"from kafka".to_vec()
            },
        ]
    );
    stop.cancel();
    assert_eq!(events.recv().await, None, "the stream ends when stopped");
}
