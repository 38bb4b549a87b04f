//! Connecting to the real servers, waiting a while for one that does not answer yet (a
//! service starting beside its broker) before giving up with a clear error.

use crate::error::{Error, Result};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long to keep trying a server that does not answer before giving up with a clear error.
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// Connects to Redis, retrying with backoff while it does not answer.
#[cfg(feature = "redis")]
pub async fn connect_store(url: &str) -> Result<events::RedisStore> {
    let what = format!("connecting to redis at {url}");
    let never = CancellationToken::new();
    match events::retry(&what, &never, Some(CONNECT_DEADLINE), || {
        events::RedisStore::connect(url)
    })
    .await
    {
        Some(Ok(store)) => Ok(store),
        Some(Err(source)) => Err(Error::Unreachable {
            server: "redis",
            address: url.to_string(),
            source,
        }),
        None => Err(events::Error::Closed(what).into()),
    }
}

/// Creates the Kafka client and checks the broker answers, retrying with backoff.
#[cfg(feature = "kafka")]
pub async fn connect_broker(options: events::KafkaOptions) -> Result<events::KafkaBroker> {
    let brokers = options.brokers.clone();
    let broker = events::KafkaBroker::connect(options)?;
    let what = format!("connecting to kafka at {brokers}");
    let never = CancellationToken::new();
    match events::retry(&what, &never, Some(CONNECT_DEADLINE), || broker.check()).await {
        Some(Ok(())) => Ok(broker),
        Some(Err(source)) => Err(Error::Unreachable {
            server: "kafka",
            address: brokers,
            source,
        }),
        None => Err(events::Error::Closed(what).into()),
    }
}
