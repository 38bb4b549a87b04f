//! Following one session: its status each time it changes, its result last. The one follower
//! behind [`Client::monitor`](super::Client::monitor), `agency watch` and the status page's
//! event stream.

use super::{status, Status};
use crate::error::{Error, Result};
use events::{Store, Subscription};
use futures_util::Stream;
use std::sync::Arc;
use std::time::Duration;

/// What a follower holds between two statuses.
struct Following {
    store: Arc<dyn Store>,
    id: String,
    channel: String,
    every: Duration,
    announced: Option<Box<dyn Subscription>>,
    /// What the last status sent shows: a live state is sent again only when it changed.
    seen: Option<String>,
    /// Whether the session was found once: then it going missing for a moment (between a
    /// rerun's start and its first state) is waited out.
    known: bool,
    ended: bool,
}

impl Following {
    /// Until its run announces a new live state, at most `every`.
    async fn wait(&mut self) {
        if self.announced.is_none() {
            self.announced = self.store.subscribe(&self.channel).await.ok();
        }
        match self.announced.as_mut() {
            Some(subscription) => {
                if let Ok(Err(_)) = tokio::time::timeout(self.every, subscription.next()).await {
                    self.announced = None; // dropped: subscribe again
                }
            }
            None => tokio::time::sleep(self.every).await,
        }
    }

    /// The next status to send, `None` once the result was sent.
    async fn next(&mut self) -> Option<Result<Status>> {
        if self.ended {
            return None;
        }
        if self.known {
            // Sent a status just now: the next one is news.
            self.wait().await;
        } else {
            self.announced = self.store.subscribe(&self.channel).await.ok();
        }
        loop {
            match status(self.store.as_ref(), &self.id).await {
                Ok(Status::Finished(result)) => {
                    self.ended = true;
                    return Some(Ok(Status::Finished(result)));
                }
                Ok(Status::Live(state)) => {
                    self.known = true;
                    let mark = serde_json::to_string(&(
                        &state.status,
                        &state.updated_at,
                        &state.instances,
                    ))
                    .ok();
                    if mark != self.seen {
                        self.seen = mark;
                        return Some(Ok(Status::Live(state)));
                    }
                }
                Err(Error::UnknownSession { .. }) if self.known => {}
                Err(error) => {
                    self.ended = true;
                    return Some(Err(error));
                }
            }
            self.wait().await;
        }
    }
}

/// Session `id`'s status each time it changes, ending with its result: woken by each live state
/// its run announces on the session's progress channel, and reading the store at least every
/// `every` (an announcement can be lost with a connection). A session unknown at the start is
/// an [`Error::UnknownSession`], and ends the stream, as any error does.
pub fn follow(
    store: Arc<dyn Store>,
    id: &str,
    every: Duration,
) -> impl Stream<Item = Result<Status>> + Send + 'static {
    let following = Following {
        store,
        id: id.to_string(),
        channel: events::progress_channel(id),
        every,
        announced: None,
        seen: None,
        known: false,
        ended: false,
    };
    futures_util::stream::unfold(following, |mut following| async move {
        let next = following.next().await?;
        Some((next, following))
    })
}
