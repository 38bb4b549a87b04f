//! One subscription to every session's notices, shared by all the sessions a coordinator runs.
//!
//! A session therefore costs no pub/sub connection of its own, and starting one sets none up:
//! that connection and its `SUBSCRIBE` round trip used to sit on every session's latency path.
//! Notices of sessions this coordinator does not run (another coordinator's) are dropped here.

use events::{Event, EventManager, Notice, Notices, Source, NOTICES_PATTERN};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

/// What a session hears from the router.
#[derive(Debug)]
pub(crate) enum Routed {
    Notice(Notice),
    /// The subscription was lost and restored: notices in between are gone, read the store.
    Resubscribed,
    /// The subscription failed for good.
    Failed(String),
}

/// Each running session's sender, with the number of the registration that made it.
type Routes = Arc<Mutex<HashMap<String, (u64, mpsc::UnboundedSender<Routed>)>>>;

pub(crate) struct NoticeRouter {
    store: Arc<dyn Notices>,
    routes: Routes,
    registrations: AtomicU64,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// Stops the subscription when the last coordinator handle is dropped.
    _stop: DropGuard,
    stop: CancellationToken,
}

impl std::fmt::Debug for NoticeRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoticeRouter").finish_non_exhaustive()
    }
}

impl NoticeRouter {
    pub(crate) fn new(store: Arc<dyn Notices>) -> Self {
        let stop = CancellationToken::new();
        Self {
            store,
            routes: Arc::default(),
            registrations: AtomicU64::new(0),
            task: tokio::sync::Mutex::new(None),
            _stop: stop.clone().drop_guard(),
            stop,
        }
    }

    /// Routes session `session`'s notices to the returned receiver until it is dropped. When
    /// this returns, the subscription is live: nothing published afterwards is missed.
    pub(crate) async fn register(&self, session: &str) -> events::Result<Route> {
        {
            let mut task = self.task.lock().await;
            if task.as_ref().is_none_or(JoinHandle::is_finished) {
                let stream = EventManager::new(self.store.clone(), None)
                    .subscribe(
                        vec![Source::Pattern(NOTICES_PATTERN.into())],
                        self.stop.child_token(),
                    )
                    .await?;
                *task = Some(tokio::spawn(route(stream, self.routes.clone())));
            }
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        let registration = self.registrations.fetch_add(1, Ordering::Relaxed);
        let earlier = lock(&self.routes).insert(session.to_string(), (registration, sender));
        if earlier.is_some() {
            tracing::warn!(
                session,
                "session id already running on this coordinator; its notices now go to the newer run"
            );
        }
        Ok(Route {
            session: session.to_string(),
            registration,
            receiver,
            routes: self.routes.clone(),
        })
    }
}

fn lock(
    routes: &Routes,
) -> std::sync::MutexGuard<'_, HashMap<String, (u64, mpsc::UnboundedSender<Routed>)>> {
    routes.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands each notice to its session; tells every session when the subscription was lost.
async fn route(mut stream: mpsc::Receiver<Event>, routes: Routes) {
    while let Some(event) = stream.recv().await {
        match event {
            Event::Message { payload, .. } => match serde_json::from_slice::<Notice>(&payload) {
                Ok(notice) => {
                    if let Some((_, session)) = lock(&routes).get(&notice.session) {
                        let _ = session.send(Routed::Notice(notice));
                    }
                }
                Err(error) => tracing::warn!(%error, "ignoring a malformed notice"),
            },
            Event::Resubscribed { .. } => {
                for (_, session) in lock(&routes).values() {
                    let _ = session.send(Routed::Resubscribed);
                }
            }
            Event::Failed { error, .. } => {
                for (_, session) in lock(&routes).values() {
                    let _ = session.send(Routed::Failed(error.clone()));
                }
                // The next session to start subscribes again.
                return;
            }
        }
    }
}

/// A session's notices; unregisters when dropped.
#[derive(Debug)]
pub(crate) struct Route {
    session: String,
    registration: u64,
    receiver: mpsc::UnboundedReceiver<Routed>,
    routes: Routes,
}

impl Route {
    pub(crate) async fn recv(&mut self) -> Option<Routed> {
        self.receiver.recv().await
    }

    /// A notice already queued, without waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Routed> {
        self.receiver.try_recv().ok()
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        let mut routes = lock(&self.routes);
        // A newer run under the same id may have taken the slot: leave its route alone.
        if routes
            .get(&self.session)
            .is_some_and(|(registration, _)| *registration == self.registration)
        {
            routes.remove(&self.session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::{notices_channel, MemoryStore, Store, TaskRef};
    use std::time::Duration;

    async fn announce(store: &dyn Store, session: &str, instance: u64) {
        let mut notice = Notice::new(session, TaskRef { group: 0, task: 0 });
        notice.add_success(instance, 1);
        store
            .publish(
                &notices_channel(session),
                serde_json::to_vec(&notice).expect("encode"),
            )
            .await
            .expect("publish");
    }

    async fn next_instance(route: &mut Route) -> u64 {
        match tokio::time::timeout(Duration::from_secs(5), route.recv()).await {
            Ok(Some(Routed::Notice(notice))) => notice.succeeded[0].0,
            other => panic!("expected a notice, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn each_session_hears_only_its_own_notices_over_one_subscription() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let router = NoticeRouter::new(store.clone());
        let mut first = router.register("first").await.expect("register first");
        let mut second = router.register("second").await.expect("register second");

        announce(store.as_ref(), "second", 20).await;
        announce(store.as_ref(), "elsewhere", 99).await; // another coordinator's session
        announce(store.as_ref(), "first", 10).await;
        store
            .publish(&notices_channel("first"), b"not json".to_vec())
            .await
            .expect("publish");
        announce(store.as_ref(), "first", 11).await;

        assert_eq!(next_instance(&mut first).await, 10);
        assert_eq!(next_instance(&mut first).await, 11);
        assert_eq!(next_instance(&mut second).await, 20);

        // A finished session unregisters; the others keep hearing theirs.
        drop(first);
        announce(store.as_ref(), "first", 12).await;
        announce(store.as_ref(), "second", 21).await;
        assert_eq!(next_instance(&mut second).await, 21);
        assert!(lock(&router.routes).get("first").is_none());
    }

    #[tokio::test]
    async fn a_rerun_under_the_same_id_keeps_its_route_when_the_older_run_ends() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let router = NoticeRouter::new(store.clone());
        let older = router.register("same").await.expect("register");
        let mut newer = router.register("same").await.expect("register again");
        drop(older);
        announce(store.as_ref(), "same", 7).await;
        assert_eq!(next_instance(&mut newer).await, 7);
    }
}
