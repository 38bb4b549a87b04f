//! The chaos store's capabilities that belong to no session (membership, memoized results,
//! pub/sub) and the subscription that loses and repeats messages.

use super::{ChaosStore, BACKEND};
use crate::error::Result;
use crate::store::{AgentQueue, Membership, Memo, Notices, Subscription, TaskManager};
use async_trait::async_trait;
use serde_json::Value;
use std::time::Duration;

#[async_trait]
impl Membership for ChaosStore {
    async fn now_ms(&self) -> Result<u64> {
        faulty!(self, "reading the clock".to_string(), self.inner.now_ms())
    }

    async fn heartbeat(&self, member: &str, info: &[u8]) -> Result<()> {
        faulty!(
            self,
            format!("heartbeat of {member}"),
            self.inner.heartbeat(member, info)
        )
    }

    async fn members(&self) -> Result<Vec<(String, Vec<u8>, u64)>> {
        faulty!(self, "listing members".to_string(), self.inner.members())
    }

    async fn forget_member(&self, member: &str) -> Result<()> {
        faulty!(
            self,
            format!("forgetting {member}"),
            self.inner.forget_member(member)
        )
    }
}

#[async_trait]
impl Memo for ChaosStore {
    async fn memo_get(&self, keys: &[String]) -> Result<Vec<Option<Value>>> {
        faulty!(
            self,
            format!("reading {} memoized results", keys.len()),
            self.inner.memo_get(keys)
        )
    }

    async fn memo_put(&self, entries: &[(String, Value)], ttl: Option<Duration>) -> Result<()> {
        faulty!(
            self,
            format!("storing {} memoized results", entries.len()),
            self.inner.memo_put(entries, ttl)
        )
    }

    async fn memo_clear(&self, prefix: &str) -> Result<u64> {
        faulty!(
            self,
            format!("clearing memoized results under {prefix:?}"),
            self.inner.memo_clear(prefix)
        )
    }
}

#[async_trait]
impl Notices for ChaosStore {
    async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<()> {
        faulty!(
            self,
            format!("publishing on {channel}"),
            self.inner.publish(channel, payload)
        )
    }

    async fn subscribe(&self, channel: &str) -> Result<Box<dyn Subscription>> {
        let inner = faulty!(
            self,
            format!("subscribing to {channel}"),
            self.inner.subscribe(channel)
        )?;
        Ok(self.wrap(inner, channel))
    }

    async fn subscribe_pattern(&self, pattern: &str) -> Result<Box<dyn Subscription>> {
        let inner = faulty!(
            self,
            format!("subscribing to {pattern}"),
            self.inner.subscribe_pattern(pattern)
        )?;
        Ok(self.wrap(inner, pattern))
    }
}
/// The chaos store keeps no queue for agents: the defaults refuse.
impl AgentQueue for ChaosStore {}

impl TaskManager for ChaosStore {}

impl ChaosStore {
    fn wrap(&self, inner: Box<dyn Subscription>, name: &str) -> Box<dyn Subscription> {
        Box::new(ChaosSubscription {
            inner,
            store: self.clone(),
            name: name.to_string(),
            again: None,
        })
    }
}

/// A subscription that loses messages, delivers some twice, and sometimes drops (as a
/// connection does), as the dice say.
struct ChaosSubscription {
    inner: Box<dyn Subscription>,
    store: ChaosStore,
    name: String,
    again: Option<Vec<u8>>,
}

#[async_trait]
impl Subscription for ChaosSubscription {
    async fn next(&mut self) -> Result<Vec<u8>> {
        if let Some(payload) = self.again.take() {
            return Ok(payload);
        }
        loop {
            let payload = self.inner.next().await?;
            let name = &self.name;
            if self
                .store
                .roll(|f| f.fail, || format!("drop the subscription to {name}"))
            {
                return Err(crate::chaos::unavailable(
                    BACKEND,
                    &format!("reading {name}"),
                ));
            }
            if self
                .store
                .roll(|f| f.drop_notice, || format!("lose a message on {name}"))
            {
                continue;
            }
            if self.store.roll(
                |f| f.duplicate_notice,
                || format!("repeat a message on {name}"),
            ) {
                self.again = Some(payload.clone());
            }
            return Ok(payload);
        }
    }
}
