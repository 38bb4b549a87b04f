//! [`Broker`](crate::Broker): consumer groups, order by key, payload limits, pausing.

use super::WAIT;
use crate::broker::Position;
use crate::broker::{Broker, Consumer};
use std::collections::HashSet;
use std::time::Duration;

/// Consumer groups share messages, every group sees every message (earliest offsets), messages
/// of one key arrive in order, payloads arrive intact, under topic `topic`.
pub async fn broker_suite(broker: &dyn Broker, topic: &str) {
    payloads_over_the_limit_are_refused(broker, topic).await;
    let landed = published_where_the_topic_ends(broker, topic).await;
    let mut other = shared_by_a_group_and_seen_by_another(broker, topic, &landed).await;
    ordered_by_key(broker, topic, other.as_mut()).await;
    held_back_while_paused(broker, topic, other.as_mut()).await;
}

/// A payload over the limit is refused before anything is sent, and retrying cannot help.
async fn payloads_over_the_limit_are_refused(broker: &dyn Broker, topic: &str) {
    let refused = broker
        .publish(topic, "big", vec![b'x'; crate::MAX_MESSAGE_BYTES + 1])
        .await
        .expect_err("a payload over the limit");
    assert!(!refused.is_retryable(), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("over the limit of 1000000 bytes"),
        "{refused}"
    );
}

/// Six messages published, each where its publisher is told it landed, below the end the
/// topic then has.
async fn published_where_the_topic_ends(broker: &dyn Broker, topic: &str) -> Vec<Position> {
    // Where each message landed, as its publisher is told: the position a consumer reads it at.
    let mut landed = Vec::new();
    for i in 0..6u32 {
        let position = broker
            .publish(topic, &format!("k{i}"), i.to_be_bytes().to_vec())
            .await
            .expect("publish");
        landed.push(position);
    }
    // The topic ends past every message published to it: the sum of its partitions' ends is
    // six, and each message lies below its partition's end. A topic never published to has
    // no partitions to speak of, or only empty ones.
    let ends = broker.ends(topic).await.expect("where the topic ends");
    assert_eq!(ends.iter().map(|(_, end)| end).sum::<u64>(), 6, "{ends:?}");
    for position in &landed {
        let (partition, offset) = position.partition_offset();
        assert!(
            ends.iter().any(|&(p, end)| p == partition && offset < end),
            "{position:?} lies below its partition's end: {ends:?}"
        );
    }
    let unknown = broker
        .ends(&format!("{topic}-never-published"))
        .await
        .expect("where a topic never published to ends");
    assert!(unknown.iter().all(|(_, end)| *end == 0), "{unknown:?}");
    landed
}

/// Two members of one group share the six messages, each read where it landed; a second group
/// sees all six, whose member is returned.
async fn shared_by_a_group_and_seen_by_another(
    broker: &dyn Broker,
    topic: &str,
    landed: &[Position],
) -> Box<dyn Consumer> {
    // Two members of one group share the six messages; a second group sees all six. Group ids
    // are fresh per topic: joining a group a departed process still holds waits for it.
    let group_a = format!("{topic}-group-a");
    let group_b = format!("{topic}-group-b");
    let mut first = broker
        .subscribe(topic, &group_a)
        .await
        .expect("subscribe a1");
    let mut second = broker
        .subscribe(topic, &group_a)
        .await
        .expect("subscribe a2");
    let mut other = broker
        .subscribe(topic, &group_b)
        .await
        .expect("subscribe b");
    let mut seen = HashSet::new();
    while seen.len() < 6 {
        let next = tokio::select! {
            m = first.next() => m,
            m = second.next() => m,
            () = tokio::time::sleep(WAIT) => panic!("group-a got {} of 6 messages", seen.len()),
        };
        let message = next.expect("message");
        let value = u32::from_be_bytes(
            message
                .payload
                .as_slice()
                .try_into()
                .expect("4-byte payload"),
        );
        assert_eq!(message.key, format!("k{value}"));
        assert_eq!(
            Position::of(&message),
            landed[value as usize],
            "message k{value} is read where its publisher was told it landed"
        );
        assert!(
            seen.insert(value),
            "message {value} delivered twice within one group"
        );
    }
    let mut others = Vec::new();
    for _ in 0..6 {
        let message = tokio::time::timeout(WAIT, other.next())
            .await
            .expect("group-b message within the bound")
            .expect("message");
        other.commit(&message).await.expect("commit");
        others.push(message.payload);
    }
    // Order is promised per key (Kafka: per partition), not across the topic.
    others.sort();
    let expected: Vec<Vec<u8>> = (0..6u32).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(others, expected, "a second group sees every message once");
    other
}

/// Messages with one key arrive in the order published.
async fn ordered_by_key(broker: &dyn Broker, topic: &str, other: &mut dyn Consumer) {
    for i in 10..13u32 {
        broker
            .publish(topic, "same-key", i.to_be_bytes().to_vec())
            .await
            .expect("publish");
    }
    let mut same_key = Vec::new();
    for _ in 0..3 {
        let message = tokio::time::timeout(WAIT, other.next())
            .await
            .expect("same-key message within the bound")
            .expect("message");
        same_key.push(message.payload);
    }
    let expected: Vec<Vec<u8>> = (10..13u32).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(
        same_key, expected,
        "messages with one key arrive in the order published"
    );
}

/// A paused member yields nothing, and gets what it missed once resumed.
async fn held_back_while_paused(broker: &dyn Broker, topic: &str, other: &mut dyn Consumer) {
    other.pause().expect("pause");
    broker
        .publish(topic, "k-paused", b"while paused".to_vec())
        .await
        .expect("publish");
    let early = tokio::time::timeout(Duration::from_secs(1), other.next()).await;
    assert!(early.is_err(), "a paused member got {early:?}");
    other.resume().expect("resume");
    let message = tokio::time::timeout(WAIT, other.next())
        .await
        .expect("the message held back by the pause, once resumed")
        .expect("message");
    assert_eq!(message.payload, b"while paused");
}
