//! Connecting to the real servers, waiting a while for one that does not answer yet (a
//! service starting beside its broker) before giving up with a clear error.

use crate::error::{Error, Result};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long to keep trying a server that does not answer before giving up with a clear error.
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// Connects to Redis, retrying with backoff while it does not answer.
#[cfg(feature = "redis")]
pub async fn connect_store(url: &str) -> Result<events::RedisStore> {
    reach("redis", url, || events::RedisStore::connect(url)).await
}

/// Connects to the Redis Cluster whose nodes (`HOST:PORT`, comma-separated; one is enough to
/// find the rest) are `nodes`, retrying with backoff while none answers.
#[cfg(feature = "redis")]
pub async fn connect_cluster_store(nodes: &str) -> Result<events::RedisStore> {
    let list: Vec<String> = nodes.split(',').map(str::to_string).collect();
    reach("the redis cluster", nodes, || {
        events::RedisStore::connect_cluster(&list)
    })
    .await
}

/// Creates the Kafka client and checks the broker answers, retrying with backoff.
#[cfg(feature = "kafka")]
pub async fn connect_broker(options: events::KafkaOptions) -> Result<events::KafkaBroker> {
    let brokers = options.brokers.clone();
    let broker = events::KafkaBroker::connect(options)?;
    reach("kafka", &brokers, || broker.check()).await?;
    Ok(broker)
}

/// Tries `operation` against `server` at `address` until it answers, or until
/// [`CONNECT_DEADLINE`] has passed (then the last error, naming both).
async fn reach<T, F, Fut>(server: &'static str, address: &str, operation: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = events::Result<T>>,
{
    let what = format!("connecting to {server} at {address}");
    let never = CancellationToken::new();
    match events::retry(&what, &never, Some(CONNECT_DEADLINE), operation).await {
        Some(Ok(value)) => Ok(value),
        Some(Err(source)) => Err(Error::Unreachable {
            server,
            address: address.to_string(),
            source,
        }),
        None => Err(events::Error::Closed(what).into()),
    }
}
