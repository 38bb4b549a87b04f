//! The capabilities that belong to no session: the clock and heartbeats, memoized results,
//! pub/sub.

use super::Subscription;
use crate::error::Result;
use async_trait::async_trait;
use serde_json::Value;
use std::time::Duration;

/// The store's clock, and the heartbeats of the processes that use it.
#[async_trait]
pub trait Membership: Send + Sync + 'static {
    /// The store's clock, in milliseconds since the Unix epoch (Redis's `TIME`): every process
    /// stamps the times it shows by this one clock. Only for display; no decision reads it.
    async fn now_ms(&self) -> Result<u64>;

    /// A process's heartbeat: what it says of itself (`info`, JSON), stamped with the store's
    /// clock. Members not heard from for a day are forgotten.
    async fn heartbeat(&self, member: &str, info: &[u8]) -> Result<()>;

    /// Every member heard from: its id, what it said last, and when (ms, [`Membership::now_ms`]).
    async fn members(&self) -> Result<Vec<(String, Vec<u8>, u64)>>;

    /// Forgets a member that is stopping.
    async fn forget_member(&self, member: &str) -> Result<()>;
}

/// Memoized results (a task's `memoize`), kept apart from every session.
#[async_trait]
pub trait Memo: Send + Sync + 'static {
    /// Memoized results (a task's `memoize`): per key, the stored success, `None` where there is
    /// none or it expired. Kept apart from every session: any later session reads them.
    async fn memo_get(&self, keys: &[String]) -> Result<Vec<Option<Value>>>;

    /// Stores memoized successes under their keys, each kept for `ttl` (for ever when `None`);
    /// a key stored again takes the newer value.
    async fn memo_put(&self, entries: &[(String, Value)], ttl: Option<Duration>) -> Result<()>;

    /// Removes the memoized results whose key starts with `prefix` (every one for `""`);
    /// returns how many were removed.
    async fn memo_clear(&self, prefix: &str) -> Result<u64>;
}

/// Pub/sub: wake-ups, never the only copy of anything (a lost message loses nothing).
#[async_trait]
pub trait Notices: Send + Sync + 'static {
    /// Sends `payload` to the channel's current subscribers (pub/sub: nothing is kept).
    async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<()>;

    /// Messages published on `channel` from now on.
    async fn subscribe(&self, channel: &str) -> Result<Box<dyn Subscription>>;

    /// Messages of every channel matching `pattern` (Redis glob: `*`, `?`, `\` escapes).
    async fn subscribe_pattern(&self, pattern: &str) -> Result<Box<dyn Subscription>>;
}
