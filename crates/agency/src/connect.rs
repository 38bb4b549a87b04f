//! Connecting to the real servers, waiting a while for one that does not answer yet (a
//! service starting beside its broker) before giving up with a clear error.

use crate::error::{Error, Result};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a long-running server (coordinator, worker) keeps trying a server that does not
/// answer yet (one starting beside it) before giving up with a clear error.
pub const SERVER_PATIENCE: Duration = Duration::from_secs(60);

/// How long a one-shot command (status, cancel, tasks, ...) keeps trying: a person is waiting,
/// and a server that does not answer within this is better named at once.
pub const COMMAND_PATIENCE: Duration = Duration::from_secs(5);

/// Connects to Redis at `url` with `access`'s credentials and certificates, retrying with
/// backoff while it does not answer, for `patience` at most.
#[cfg(feature = "redis")]
pub async fn connect_store(
    url: &str,
    access: &events::RedisAccess,
    patience: Duration,
) -> Result<events::RedisStore> {
    reach("redis", &events::shown_url(url), patience, || {
        events::RedisStore::connect_with(url, access)
    })
    .await
}

/// Connects to the Redis Cluster whose nodes (`HOST:PORT`, comma-separated; one is enough to
/// find the rest) are `nodes`, retrying with backoff while none answers, for `patience` at
/// most.
#[cfg(feature = "redis")]
pub async fn connect_cluster_store(
    nodes: &str,
    access: &events::RedisAccess,
    patience: Duration,
) -> Result<events::RedisStore> {
    let list: Vec<String> = nodes.split(',').map(str::to_string).collect();
    let shown: Vec<String> = list.iter().map(|node| events::shown_url(node)).collect();
    reach("the redis cluster", &shown.join(","), patience, || {
        events::RedisStore::connect_cluster_with(&list, access)
    })
    .await
}

/// Creates the Kafka client and checks the broker answers, retrying with backoff for
/// `patience` at most.
#[cfg(feature = "kafka")]
pub async fn connect_broker(
    options: events::KafkaOptions,
    patience: Duration,
) -> Result<events::KafkaBroker> {
    let brokers = options.brokers.clone();
    let broker = events::KafkaBroker::connect(options)?;
    reach("kafka", &brokers, patience, || broker.check()).await?;
    Ok(broker)
}

/// Tries `operation` against `server` at `address` until it answers, or until `patience` has
/// passed (then the last error, naming both); a refusal ends the trying at once.
async fn reach<T, F, Fut>(
    server: &'static str,
    address: &str,
    patience: Duration,
    operation: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = events::Result<T>>,
{
    let what = format!("connecting to {server} at {address}");
    let never = CancellationToken::new();
    match events::retry(&what, &never, Some(patience), operation).await {
        Some(Ok(value)) => Ok(value),
        Some(Err(source)) if !source.is_retryable() => Err(Error::Rejected {
            server,
            address: address.to_string(),
            source,
        }),
        Some(Err(source)) => Err(Error::Unreachable {
            server,
            address: address.to_string(),
            waited: patience,
            source,
        }),
        None => Err(events::Error::Closed(what).into()),
    }
}
