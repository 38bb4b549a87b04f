//! Malformed messages go to the dead-letter topic with the reason, and whoever consumed them
//! keeps going: one bad message never stops a worker or a coordinator.

use events::{Broker, Message, DEAD_LETTER_TOPIC};
use serde_json::json;

/// Publishes `{"topic", "offset", "partition", "key", "reason", "payload"}` to the dead-letter topic.
pub async fn send(broker: &dyn Broker, message: &Message, reason: &str) {
    tracing::warn!(topic = %message.topic, offset = message.offset, reason, "dead-lettering a message");
    let record = json!({
        "topic": message.topic,
        "offset": message.offset,
        "partition": message.partition,
        "key": message.key,
        "reason": reason,
        "payload": String::from_utf8_lossy(&message.payload),
    });
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
