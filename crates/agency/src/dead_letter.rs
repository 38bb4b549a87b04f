//! Malformed messages go to the dead-letter topic with the reason, and whoever consumed them
//! keeps going: one bad message never stops a worker or a coordinator.

use crate::metrics::DeadLetter;
use events::{Broker, Message, DEAD_LETTER_TOPIC};
use serde_json::json;

/// Payloads up to this size are copied into their dead-letter record; a larger one is
/// dead-lettered by reference (its topic, partition and offset say where it is) with its size
/// and its first [`HEAD_BYTES`], so the record always fits in a message.
const COPIED_BYTES: usize = 64 * 1024;

/// How much of a large payload its dead-letter record shows.
const HEAD_BYTES: usize = 1024;

/// Publishes `{"topic", "offset", "partition", "key", "reason", "payload_bytes", "payload"}` to
/// the dead-letter topic; for a payload over 64 KiB, `"payload_head"` (its first KiB) instead of
/// `"payload"`.
pub async fn send(broker: &dyn Broker, message: &Message, kind: DeadLetter, reason: &str) {
    crate::metrics::METRICS.dead_letter(kind);
    tracing::warn!(topic = %message.topic, offset = message.offset, reason, "dead-lettering a message");
    let mut record = json!({
        "topic": message.topic,
        "offset": message.offset,
        "partition": message.partition,
        "key": message.key.chars().take(HEAD_BYTES).collect::<String>(),
        "reason": reason,
        "payload_bytes": message.payload.len(),
    });
    if message.payload.len() <= COPIED_BYTES {
        record["payload"] = json!(String::from_utf8_lossy(&message.payload));
    } else {
        let head = &message.payload[..HEAD_BYTES];
        record["payload_head"] = json!(String::from_utf8_lossy(head));
    }
    // A `json!` object of strings and numbers always encodes; were it not to, nothing is sent.
    let payload = match serde_json::to_vec(&record) {
        Ok(payload) => payload,
        Err(error) => {
            tracing::error!(offset = message.offset, %error, "cannot encode a dead-letter record");
            return;
        }
    };
    if let Err(error) = broker
        .publish(DEAD_LETTER_TOPIC, &message.key, payload)
        .await
    {
        tracing::error!(offset = message.offset, %error, "cannot dead-letter a message");
    }
}
