//! A session's runs and lease on Redis: claims and renewals as fenced Lua calls, the current
//! run and the cancel and pause marks, cleanup.

use super::{corrupt, key, result_key, unavailable, RedisStore};
use crate::error::Result;
use crate::origin::Origin;
use crate::redis_scripts::{RESULT_TTL_SECONDS, WORKING_TTL_SECONDS};
use crate::store::{Claim, Fence, Renewal, Runs};
use async_trait::async_trait;
use redis::AsyncCommands as _;
use std::time::Duration;

#[async_trait]
impl Runs for RedisStore {
    async fn claim(
        &self,
        session: &str,
        owner: &str,
        origin: &Origin,
        token: &str,
        lease: Duration,
    ) -> Result<Claim> {
        let mut connection = self.connection.clone();
        let answer: String = self
            .claim
            .key(key(session, "lease"))
            .key(key(session, "origin"))
            .key(result_key(session))
            .key(key(session, "fence"))
            .arg(owner)
            .arg(lease.as_millis().max(1) as u64)
            .arg(origin.to_string())
            .arg(RESULT_TTL_SECONDS)
            .arg(token)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(match answer.as_str() {
            "fresh" => Claim::Fresh,
            "stale" => Claim::Stale,
            "resume" => Claim::Resume,
            "finished" => Claim::Finished,
            "held" => Claim::Held,
            "superseded" => Claim::Superseded,
            other => return Err(corrupt("the claim script's answer", other)),
        })
    }

    async fn renew(
        &self,
        session: &str,
        owner: &str,
        token: &str,
        lease: Duration,
    ) -> Result<Renewal> {
        let mut connection = self.connection.clone();
        let found: i64 = self
            .renew
            .key(key(session, "lease"))
            .key(key(session, "origin"))
            .key(key(session, "fence"))
            .arg(owner)
            .arg(lease.as_millis().max(1) as u64)
            .arg(RESULT_TTL_SECONDS)
            .arg(token)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(match found {
            1 => Renewal::Held,
            0 => Renewal::Taken,
            _ => Renewal::StateLost,
        })
    }

    async fn release(&self, session: &str, owner: &str) -> Result<()> {
        let mut connection = self.connection.clone();
        self.release
            .key(key(session, "lease"))
            .arg(owner)
            .invoke_async::<i64>(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn start_run(&self, session: &str, run: &str, fence: Fence<'_>) -> Result<()> {
        let mut invocation = self.fenced.start_run.key(key(session, "fence"));
        invocation
            .key(key(session, "run"))
            .arg(fence.token())
            .arg(run)
            .arg(WORKING_TTL_SECONDS);
        self.write_fenced(session, &mut invocation).await
    }

    async fn end_run(&self, session: &str, run: &str, fence: Fence<'_>) -> Result<()> {
        let mut invocation = self.fenced.end_run.key(key(session, "fence"));
        invocation
            .key(key(session, "run"))
            .key(key(session, "cancel"))
            .key(key(session, "pause"))
            .arg(fence.token())
            .arg(run);
        self.write_fenced(session, &mut invocation).await
    }

    async fn current_run(&self, session: &str) -> Result<Option<String>> {
        let mut connection = self.connection.clone();
        connection
            .get(key(session, "run"))
            .await
            .map_err(unavailable)
    }

    async fn request_cancel(&self, session: &str) -> Result<Option<String>> {
        let mut connection = self.connection.clone();
        self.request_cancel
            .key(key(session, "run"))
            .key(key(session, "cancel"))
            .key(key(session, "keys"))
            .arg(WORKING_TTL_SECONDS)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn cancel_requested(&self, session: &str, run: &str) -> Result<bool> {
        let mut connection = self.connection.clone();
        let cancelled: Option<String> = connection
            .get(key(session, "cancel"))
            .await
            .map_err(unavailable)?;
        Ok(cancelled.is_some_and(|cancelled| cancelled == run))
    }

    async fn request_pause(&self, session: &str, paused: bool) -> Result<Option<String>> {
        let mut connection = self.connection.clone();
        if paused {
            return self
                .request_cancel
                .key(key(session, "run"))
                .key(key(session, "pause"))
                .key(key(session, "keys"))
                .arg(WORKING_TTL_SECONDS)
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable);
        }
        let (run,): (Option<String>,) = redis::pipe()
            .atomic()
            .get(key(session, "run"))
            .del(key(session, "pause"))
            .ignore()
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(run)
    }

    async fn pause_requested(&self, session: &str, run: &str) -> Result<bool> {
        let mut connection = self.connection.clone();
        let paused: Option<String> = connection
            .get(key(session, "pause"))
            .await
            .map_err(unavailable)?;
        Ok(paused.is_some_and(|paused| paused == run))
    }

    async fn cleanup(&self, session: &str, fence: Fence<'_>) -> Result<()> {
        self.delete_working_state(&self.fenced.cleanup, session, fence.token())
            .await
    }

    async fn cleanup_run(&self, session: &str, run: &str) -> Result<()> {
        self.delete_working_state(&self.fenced.cleanup_run, session, run)
            .await
    }
}
