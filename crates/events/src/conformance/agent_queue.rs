//! [`AgentQueue`](crate::AgentQueue): the work handed to agents.

use crate::agent_queue::{AgentReport, Wanted};
use crate::store::AgentQueue;
use crate::AgentClaim;
use serde_json::json;
use std::time::Duration;

/// An item for agents of type `kind`, from instance `instance` of a task of `session`.
fn agent_item(session: &str, kind: &str, instance: u64, timeout_ms: u64) -> crate::AgentItem {
    crate::AgentItem {
        id: format!("{session}|run|0|0|{instance}|1"),
        kind: kind.to_string(),
        input: json!({"n": instance}),
        claim_timeout_ms: timeout_ms,
        origin: crate::AgentOrigin::Instance {
            session: session.to_string(),
            run: "run".into(),
            group: 0,
            task: 0,
            task_id: "t".into(),
            instance,
            attempt: 1,
        },
    }
}

/// The queue for agents, with types and items named after `prefix`: oldest first per type,
/// types in the order asked, one claim per item, a token settles or releases only while its
/// claim holds, an instance's report waits under a lease until recorded, and claims past their
/// timeout end as timed-out reports. Each step starts from what the one before left.
pub async fn agent_suite(store: &dyn AgentQueue, prefix: &str) {
    let queue = Queue::new(prefix);
    let [first, oldest, next] = queue.claimed_in_order(store).await;
    queue
        .settled_and_released(store, &first, &oldest, &next)
        .await;
    queue.expired_and_offered_again(store).await;
    queue.reported_under_lease(store).await;
}

/// Items of types `a` and `b`, and the reports they settle with.
struct Queue {
    prefix: String,
    a: String,
    b: String,
    c: String,
    items: [crate::AgentItem; 3],
    done: AgentReport,
    failed: AgentReport,
}

impl Queue {
    fn new(prefix: &str) -> Self {
        let (a, b) = (format!("{prefix}-a"), format!("{prefix}-b"));
        Self {
            items: [
                agent_item(prefix, &a, 0, 60_000),
                agent_item(prefix, &a, 1, 60_000),
                agent_item(prefix, &b, 2, 60_000),
            ],
            prefix: prefix.to_string(),
            c: format!("{prefix}-c"),
            a,
            b,
            done: AgentReport::Completed(json!({"answer": 42})),
            failed: AgentReport::Failed("no answer".into()),
        }
    }

    async fn claim(
        &self,
        store: &dyn AgentQueue,
        types: &[&String],
        token: &str,
    ) -> Option<AgentClaim> {
        let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
        let token = format!("{}-{token}", self.prefix);
        store
            .agent_claim(
                "agent-1",
                Wanted {
                    types: &types,
                    workflow: None,
                },
                &token,
            )
            .await
            .expect("claim")
    }

    async fn settle(
        &self,
        store: &dyn AgentQueue,
        token: &str,
        report: &AgentReport,
    ) -> Option<AgentClaim> {
        store.agent_settle(token, report).await.expect("settle")
    }

    /// Offered (twice: nothing doubles), claimed by the first type asked that has one, oldest
    /// first, each once: the claims of b's item and of a's two.
    async fn claimed_in_order(&self, store: &dyn AgentQueue) -> [AgentClaim; 3] {
        let (a, b, items) = (&self.a, &self.b, &self.items);
        store.agent_offer(items).await.expect("offer");
        store.agent_offer(&items[..1]).await.expect("offer again");
        let first = self
            .claim(store, &[b, a], "t1")
            .await
            .expect("an item of b");
        assert_eq!(first.item, items[2], "the first type asked that has one");
        assert_eq!((first.claims, first.agent.as_str()), (1, "agent-1"));
        let oldest = self.claim(store, &[a], "t2").await.expect("an item of a");
        assert_eq!(oldest.item, items[0], "oldest first");
        let next = self
            .claim(store, &[a], "t3")
            .await
            .expect("the other item of a");
        assert_eq!(next.item, items[1]);
        assert!(
            self.claim(store, &[a, b], "t4").await.is_none(),
            "each item claimed once"
        );
        [first, oldest, next]
    }

    /// Settling takes an item off, its token then holding nothing; released, an item is
    /// claimed again first under a new token, the old one holding nothing.
    async fn settled_and_released(
        &self,
        store: &dyn AgentQueue,
        first: &AgentClaim,
        oldest: &AgentClaim,
        next: &AgentClaim,
    ) {
        let (done, items) = (&self.done, &self.items);
        let settled = self.settle(store, &oldest.token, done).await.expect("held");
        assert_eq!(settled.item, items[0]);
        assert!(self.settle(store, &oldest.token, done).await.is_none());
        let released = store.agent_release(&next.token).await.expect("release");
        assert_eq!(released.expect("held"), items[1]);
        let again = store.agent_release(&next.token).await.expect("release");
        assert!(again.is_none());
        let again = self
            .claim(store, &[&self.a], "t5")
            .await
            .expect("released item");
        assert_eq!(
            (again.item.id.as_str(), again.claims),
            (items[1].id.as_str(), 2)
        );
        assert!(self.settle(store, &next.token, done).await.is_none());
        assert!(self
            .settle(store, &again.token, &self.failed)
            .await
            .is_some());
        assert!(self.settle(store, &first.token, done).await.is_some());
    }

    /// A claim past its timeout ends, its token holding nothing, its item not offered again;
    /// offered again (a range delivered twice), settled items are not offered anew.
    async fn expired_and_offered_again(&self, store: &dyn AgentQueue) {
        let c = &self.c;
        let short_item = agent_item(&self.prefix, c, 3, 1);
        store.agent_offer(&[short_item]).await.expect("offer");
        let short = self.claim(store, &[c], "t6").await.expect("an item of c");
        tokio::time::sleep(Duration::from_millis(30)).await;
        store.agent_expire(1_000).await.expect("expire");
        assert!(self.settle(store, &short.token, &self.done).await.is_none());
        assert!(
            self.claim(store, &[c], "t7").await.is_none(),
            "an expired claim is not offered again"
        );
        store.agent_offer(&self.items).await.expect("offer again");
        assert!(
            self.claim(store, &[&self.a, &self.b], "t8").await.is_none(),
            "settled items are not offered anew"
        );
    }

    /// The four reports wait for a worker, leased to one taker at a time, until recorded. On a
    /// shared server other processes' reports may be there too: only ours are compared.
    async fn reported_under_lease(&self, store: &dyn AgentQueue) {
        let prefix = self.prefix.as_str();
        let ours = |reported: &[crate::Reported]| -> Vec<(String, AgentReport, u32)> {
            let mut ours: Vec<_> = reported
                .iter()
                .filter(|r| r.item.kind.starts_with(prefix))
                .map(|r| (r.item.id.clone(), r.outcome.clone(), r.claims))
                .collect();
            ours.sort_by(|x, y| x.0.cmp(&y.0));
            ours
        };
        let lease = Duration::from_millis(300);
        let taken = store.agent_reports(10_000, lease).await.expect("reports");
        let items = &self.items;
        let mut expected = vec![
            (items[0].id.clone(), self.done.clone(), 1),
            (items[1].id.clone(), self.failed.clone(), 2),
            (items[2].id.clone(), self.done.clone(), 1),
            (format!("{prefix}|run|0|0|3|1"), AgentReport::TimedOut, 1),
        ];
        expected.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(ours(&taken), expected, "every report, once");
        let leased = store.agent_reports(10_000, lease).await.expect("reports");
        assert!(
            ours(&leased).is_empty(),
            "leased reports are not taken again"
        );
        tokio::time::sleep(lease + Duration::from_millis(50)).await;
        let retaken = store.agent_reports(10_000, lease).await.expect("reports");
        assert_eq!(
            ours(&retaken),
            expected,
            "a lease that ran out gives them again"
        );
        let ids: Vec<String> = expected.iter().map(|(id, _, _)| id.clone()).collect();
        store.agent_reported(&ids).await.expect("reported");
        tokio::time::sleep(lease + Duration::from_millis(50)).await;
        let after = store.agent_reports(10_000, lease).await.expect("reports");
        assert!(ours(&after).is_empty(), "recorded reports are gone");
    }
}
