//! [`AgentQueue`](crate::AgentQueue) and [`TaskManager`](crate::TaskManager): the work handed
//! to agents and the tasks they manage.

use crate::agent_queue::{AgentReport, NewTask, TaskState};
use crate::error::{Error, Result};
use crate::store::{AgentQueue, TaskManager};
use serde_json::{json, Map, Value};
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
/// timeout end as timed-out reports.
pub async fn agent_suite(store: &dyn AgentQueue, prefix: &str) {
    let (a, b, c) = (
        format!("{prefix}-a"),
        format!("{prefix}-b"),
        format!("{prefix}-c"),
    );
    let items = [
        agent_item(prefix, &a, 0, 60_000),
        agent_item(prefix, &a, 1, 60_000),
        agent_item(prefix, &b, 2, 60_000),
    ];
    store.agent_offer(&items).await.expect("offer");
    // Offered again: nothing doubles.
    store.agent_offer(&items[..1]).await.expect("offer again");
    let claim = |types: Vec<String>, token: &'static str| async move {
        store
            .agent_claim("agent-1", &types, &format!("{prefix}-{token}"))
            .await
            .expect("claim")
    };
    let settle = |token: String, report: AgentReport| async move {
        store.agent_settle(&token, &report).await.expect("settle")
    };
    let done = AgentReport::Completed(json!({"answer": 42}));
    let first = claim(vec![b.clone(), a.clone()], "t1")
        .await
        .expect("an item of b");
    assert_eq!(first.item, items[2], "the first type asked that has one");
    assert_eq!((first.claims, first.agent.as_str()), (1, "agent-1"));
    let oldest = claim(vec![a.clone()], "t2").await.expect("an item of a");
    assert_eq!(oldest.item, items[0], "oldest first");
    let next = claim(vec![a.clone()], "t3")
        .await
        .expect("the other item of a");
    assert_eq!(next.item, items[1]);
    assert!(
        claim(vec![a.clone(), b.clone()], "t4").await.is_none(),
        "each item claimed once"
    );
    // Settling takes the item off; its token then holds nothing.
    let settled = settle(oldest.token.clone(), done.clone())
        .await
        .expect("held");
    assert_eq!(settled.item, items[0]);
    assert!(settle(oldest.token.clone(), done.clone()).await.is_none());
    // Released, the item is claimed again first, under a new token; the old one holds nothing.
    let released = store
        .agent_release(&next.token)
        .await
        .expect("release")
        .expect("held");
    assert_eq!(released, items[1]);
    assert!(store
        .agent_release(&next.token)
        .await
        .expect("release")
        .is_none());
    let again = claim(vec![a.clone()], "t5").await.expect("released item");
    assert_eq!(
        (again.item.id.as_str(), again.claims),
        (items[1].id.as_str(), 2)
    );
    assert!(settle(next.token.clone(), done.clone()).await.is_none());
    let failed = AgentReport::Failed("no answer".into());
    assert!(settle(again.token.clone(), failed.clone()).await.is_some());
    assert!(settle(first.token.clone(), done.clone()).await.is_some());
    // A claim past its timeout ends, and its token holds nothing.
    store
        .agent_offer(&[agent_item(prefix, &c, 3, 1)])
        .await
        .expect("offer");
    let short = claim(vec![c.clone()], "t6").await.expect("an item of c");
    tokio::time::sleep(Duration::from_millis(30)).await;
    store.agent_expire(1_000).await.expect("expire");
    assert!(settle(short.token.clone(), done.clone()).await.is_none());
    assert!(
        claim(vec![c], "t7").await.is_none(),
        "an expired claim is not offered again"
    );
    // Offered again (a range delivered twice), settled items are not offered anew.
    store.agent_offer(&items).await.expect("offer again");
    assert!(
        claim(vec![a.clone(), b.clone()], "t8").await.is_none(),
        "settled items are not offered anew"
    );
    // The four reports wait for a worker; on a shared server other processes' reports may be
    // there too: only ours are compared.
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
    let mut expected = vec![
        (items[0].id.clone(), done.clone(), 1),
        (items[1].id.clone(), failed, 2),
        (items[2].id.clone(), done.clone(), 1),
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

/// The task manager, with workflows and types named after `prefix`: creation, parents of the
/// same workflow, claims that set the status, completion and failure with their answers, a
/// release and a timed-out claim back to pending, cancel, counts by status and type, metadata.
pub async fn task_suite(store: &(impl AgentQueue + TaskManager + ?Sized), prefix: &str) {
    let (workflow, other) = (format!("{prefix}-wf"), format!("{prefix}-other"));
    let (analyze, validate) = (format!("{prefix}-analyze"), format!("{prefix}-validate"));
    let new = |id: &str, kind: &str, parent: Option<&str>, timeout_ms: u64| NewTask {
        id: format!("{prefix}-{id}"),
        workflow: workflow.clone(),
        kind: kind.to_string(),
        data: json!({"file": id, "big": 12345678901234567_u64}),
        parent: parent.map(|p| format!("{prefix}-{p}")),
        claim_timeout_ms: timeout_ms,
    };
    let root = new("root", &analyze, None, 60_000);
    store.task_create(&root).await.expect("create root");
    let refused = |result: Result<()>, says: &str| match result {
        Err(Error::Refused { message, .. }) => {
            assert!(message.contains(says), "`{message}` says `{says}`")
        }
        other => panic!("refused ({says}), not {other:?}"),
    };
    refused(store.task_create(&root).await, "exists already");
    refused(
        store
            .task_create(&new("orphan", &analyze, Some("nobody"), 60_000))
            .await,
        "does not exist",
    );
    let mut stranger = new("stranger", &analyze, Some("root"), 60_000);
    stranger.workflow = other.clone();
    refused(store.task_create(&stranger).await, "of workflow");
    for (id, timeout) in [("child-1", 60_000), ("child-2", 1), ("child-3", 60_000)] {
        store
            .task_create(&new(id, &validate, Some("root"), timeout))
            .await
            .expect("create child");
    }
    let got = store
        .task_get(&root.id)
        .await
        .expect("get")
        .expect("the root");
    assert_eq!(
        (got.status, &got.data, &got.parent_id, got.claims),
        (TaskState::Pending, &root.data, &None, 0),
        "created pending, its data exactly"
    );
    assert!(store
        .task_get(&format!("{prefix}-none"))
        .await
        .expect("get")
        .is_none());
    let children = store.task_children(&root.id).await.expect("children");
    let ids: Vec<&str> = children.iter().map(|c| c.id.as_str()).collect();
    let expected: Vec<String> = ["child-1", "child-2", "child-3"]
        .iter()
        .map(|c| format!("{prefix}-{c}"))
        .collect();
    assert_eq!(ids, expected, "children in creation order");
    assert!(children
        .iter()
        .all(|c| c.parent_id.as_deref() == Some(root.id.as_str())));

    // Claimed: in progress, by its agent; the claim says where it comes from.
    let claim = |types: Vec<String>, token: &str| {
        let token = format!("{prefix}-{token}");
        async move {
            store
                .agent_claim("agent-7", &types, &token)
                .await
                .expect("claim")
        }
    };
    let taken = claim(vec![analyze.clone()], "r1").await.expect("the root");
    assert_eq!(taken.item.id, root.id);
    assert_eq!(
        taken.item.origin,
        crate::AgentOrigin::Task {
            workflow: workflow.clone(),
            parent: None
        }
    );
    let status =
        |id: String| async move { store.task_get(&id).await.expect("get").expect("a task") };
    let held = status(root.id.clone()).await;
    assert_eq!(
        (held.status, held.locked_by.as_deref(), held.claims),
        (TaskState::InProgress, Some("agent-7"), 1)
    );
    let result = json!({"output": "results.json", "n": 0.1});
    store
        .agent_settle(&taken.token, &AgentReport::Completed(result.clone()))
        .await
        .expect("settle")
        .expect("held");
    let done = status(root.id.clone()).await;
    assert_eq!(
        (done.status, done.result.as_ref()),
        (TaskState::Completed, Some(&result))
    );
    assert!(done.completed_at_ms.is_some());

    let one = claim(vec![validate.clone()], "c1").await.expect("child 1");
    store
        .agent_settle(&one.token, &AgentReport::Failed("schema mismatch".into()))
        .await
        .expect("settle")
        .expect("held");
    let failed = status(expected[0].clone()).await;
    assert_eq!(
        (failed.status, failed.error.as_deref()),
        (TaskState::Failed, Some("schema mismatch"))
    );
    // Child 2's claim times out: pending again, claimed again first.
    let two = claim(vec![validate.clone()], "c2").await.expect("child 2");
    assert_eq!(two.item.id, expected[1]);
    tokio::time::sleep(Duration::from_millis(30)).await;
    store.agent_expire(1_000).await.expect("expire");
    let back = status(expected[1].clone()).await;
    assert_eq!(
        (back.status, back.locked_by.as_deref(), back.claims),
        (TaskState::Pending, None, 1)
    );
    assert!(store
        .agent_settle(&two.token, &AgentReport::Completed(json!(1)))
        .await
        .expect("settle")
        .is_none());
    let retaken = claim(vec![validate.clone()], "c2b").await.expect("child 2");
    assert_eq!(
        (retaken.item.id.as_str(), retaken.claims),
        (expected[1].as_str(), 2)
    );
    // Released: pending again.
    store
        .agent_release(&retaken.token)
        .await
        .expect("release")
        .expect("held");
    assert_eq!(status(expected[1].clone()).await.status, TaskState::Pending);
    // Cancelled: child 2 pending, child 3 claimed; neither is offered any more.
    let three = claim(vec![validate.clone()], "c3").await.expect("a child");
    assert_eq!(three.item.id, expected[1], "the released one first");
    store
        .task_cancel(&expected[1])
        .await
        .expect("cancel claimed");
    store
        .task_cancel(&expected[2])
        .await
        .expect("cancel pending");
    refused(store.task_cancel(&expected[2]).await, "cancelled already");
    refused(store.task_cancel(&root.id).await, "completed already");
    refused(
        store.task_cancel(&format!("{prefix}-none")).await,
        "does not exist",
    );
    assert!(store
        .agent_settle(&three.token, &AgentReport::Completed(json!(1)))
        .await
        .expect("settle")
        .is_none());
    assert!(claim(vec![validate.clone()], "c4").await.is_none());
    assert_eq!(
        status(expected[2].clone()).await.status,
        TaskState::Cancelled
    );

    let summary = store.task_summary(&workflow).await.expect("summary");
    let counts = |pairs: &[(&str, u64)]| -> std::collections::BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    assert_eq!(summary.total_tasks, 4);
    assert_eq!(
        summary.status_counts,
        counts(&[
            ("pending", 0),
            ("in_progress", 0),
            ("completed", 1),
            ("failed", 1),
            ("cancelled", 2)
        ])
    );
    assert_eq!(
        summary.type_counts,
        counts(&[(analyze.as_str(), 1), (validate.as_str(), 3)])
    );
    assert_eq!(
        summary.by_type[&validate],
        counts(&[("failed", 1), ("cancelled", 2)])
    );
    assert_eq!(
        store
            .task_summary(&other)
            .await
            .expect("summary")
            .total_tasks,
        0
    );

    let set: Map<String, Value> =
        serde_json::from_value(json!({"version": "2.0", "n": 3})).expect("an object");
    assert_eq!(
        store.workflow_metadata(&workflow, &set).await.expect("set"),
        set
    );
    let more: Map<String, Value> =
        serde_json::from_value(json!({"version": "2.1", "env": "prod"})).expect("an object");
    let merged = store
        .workflow_metadata(&workflow, &more)
        .await
        .expect("set");
    assert_eq!(
        Value::Object(merged),
        json!({"version": "2.1", "n": 3, "env": "prod"}),
        "keys set are replaced, others kept"
    );
    assert!(store
        .workflow_metadata(&other, &Map::new())
        .await
        .expect("read")
        .is_empty());
}
