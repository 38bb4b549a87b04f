//! Riding out a store or broker outage: operations that failed because a server could not be
//! reached are tried again with backoff, instead of failing the work they belong to.

use std::future::Future;
use tokio_util::sync::CancellationToken;

/// Runs `operation` until it succeeds or fails for a reason retrying cannot fix; while the
/// server is unreachable it waits with backoff and says so, naming `what` was being done. For
/// work that has no stop of its own: it ends only with the process.
pub(crate) async fn retrying<T, F, Fut>(what: &str, operation: F) -> events::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = events::Result<T>>,
{
    retrying_for(what, None, operation).await
}

/// As [`retrying`], giving up after `patience` (when given) with the last error.
pub(crate) async fn retrying_for<T, F, Fut>(
    what: &str,
    patience: Option<std::time::Duration>,
    operation: F,
) -> events::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = events::Result<T>>,
{
    let never = CancellationToken::new();
    events::retry(what, &never, patience, operation)
        .await
        .unwrap_or_else(|| Err(events::Error::Closed(what.to_string())))
}

/// Marks `message` processed, never failing the consumer's loop. A position that cannot be
/// stored (its partition was just revoked in a rebalance, the broker is away) is dropped: the
/// message is delivered again, to this member or another, and what it records is recorded once.
pub(crate) async fn commit(consumer: &mut dyn events::Consumer, message: &events::Message) {
    if let Err(error) = consumer.commit(message).await {
        tracing::warn!(
            topic = %message.topic,
            partition = message.partition,
            offset = message.offset,
            %error,
            "cannot store the offset; the message will be delivered again"
        );
    }
}

/// The consumer's next message, waiting out a broker that is away: the consumer reconnects by
/// itself, so it is asked again shortly. Only an error retrying cannot fix is returned.
pub(crate) async fn next_message(
    consumer: &mut dyn events::Consumer,
) -> events::Result<events::Message> {
    loop {
        match consumer.next().await {
            Err(error) if error.is_retryable() => {
                tracing::warn!(%error, "cannot read from the broker; trying again");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}
