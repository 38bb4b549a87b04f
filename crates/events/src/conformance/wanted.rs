//! Which item a claim takes ([`Wanted`]): the first of its types that has one, or the oldest of
//! any type; of one workflow's tasks, or of all. And a workflow's tasks listed in pages, with
//! filters, and its metadata's times.

use crate::agent_queue::{AgentItem, AgentOrigin, NewTask, TaskFilter, TaskState, Wanted};
use crate::store::{AgentQueue, TaskManager};
use serde_json::{json, Map, Value};

/// Claims within a workflow, with and without types, on a store that may hold other items:
/// only this suite's workflows are claimed from, so it runs beside other tests.
pub async fn workflow_claim_suite(store: &(impl AgentQueue + TaskManager + ?Sized), prefix: &str) {
    let (w1, w2) = (format!("{prefix}-w1"), format!("{prefix}-w2"));
    let (x, y) = (format!("{prefix}-x"), format!("{prefix}-y"));
    for (id, workflow, kind) in [("t1", &w1, &x), ("t2", &w1, &y), ("u1", &w2, &x)] {
        store
            .task_create(&task(prefix, id, workflow, kind))
            .await
            .expect("create");
    }
    let claim = |types: Vec<String>, workflow: String, token: &'static str| async move {
        let wanted = Wanted {
            types: &types,
            workflow: Some(&workflow),
        };
        let token = format!("{prefix}-{token}");
        let claimed = store.agent_claim("a", wanted, &token).await.expect("claim");
        claimed.map(|claim| (claim.item.id, claim.token))
    };
    let id = |name: &str| format!("{prefix}-{name}");
    let (u1, _) = claim(vec![], w2.clone(), "k1").await.expect("w2's task");
    assert_eq!(u1, id("u1"), "a workflow's own tasks only");
    let (t2, _) = claim(vec![y.clone()], w1.clone(), "k2")
        .await
        .expect("w1's y");
    assert_eq!(t2, id("t2"));
    let (t1, token) = claim(vec![], w1.clone(), "k3").await.expect("w1's x");
    assert_eq!(t1, id("t1"));
    assert_eq!(
        claim(vec![], w1.clone(), "k4").await,
        None,
        "w1 has none left"
    );
    store.agent_release(&token).await.expect("release");
    let (again, _) = claim(vec![y, x], w1, "k5").await.expect("released");
    assert_eq!(again, id("t1"), "released, it is waiting again");
    assert_eq!(claim(vec![], w2, "k6").await, None);
}

/// Claims of any type with no workflow, on a store of its own (they would take any item):
/// the oldest waiting item of every type, a released one first in line.
pub async fn any_claim_suite(store: &(impl AgentQueue + TaskManager + ?Sized), prefix: &str) {
    let (x, y) = (format!("{prefix}-x"), format!("{prefix}-y"));
    let workflow = format!("{prefix}-w");
    store
        .task_create(&task(prefix, "t1", &workflow, &y))
        .await
        .expect("create");
    store
        .agent_offer(&[instance(prefix, &x)])
        .await
        .expect("offer");
    store
        .task_create(&task(prefix, "t2", &workflow, &x))
        .await
        .expect("create");
    let any = |token: &'static str| async move {
        let token = format!("{prefix}-{token}");
        let claimed = store
            .agent_claim("a", Wanted::default(), &token)
            .await
            .expect("claim");
        claimed.map(|claim| (claim.item.id, claim.token))
    };
    let (first, token) = any("k1").await.expect("the oldest");
    assert_eq!(first, format!("{prefix}-t1"));
    let (second, _) = any("k2").await.expect("the next");
    assert_eq!(second, format!("{prefix}-i1"), "an instance's item too");
    store.agent_release(&token).await.expect("release");
    let (third, _) = any("k3").await.expect("released");
    assert_eq!(
        third,
        format!("{prefix}-t1"),
        "a released item is first in line"
    );
    let (fourth, _) = any("k4").await.expect("the last");
    assert_eq!(fourth, format!("{prefix}-t2"));
    assert_eq!(any("k5").await, None);
}

/// A workflow's tasks in creation order, a page at a time, filtered by status and type; its
/// metadata's times and type once it has a task.
pub async fn listing_suite(store: &(impl AgentQueue + TaskManager + ?Sized), prefix: &str) {
    let workflow = format!("{prefix}-listed");
    let (x, y) = (format!("{prefix}-lx"), format!("{prefix}-ly"));
    let before = store
        .workflow_metadata(&workflow, &Map::new())
        .await
        .expect("metadata");
    assert!(
        before.is_empty(),
        "no times before it has a task: {before:?}"
    );
    for n in 0..7 {
        let kind = if n % 2 == 0 { &x } else { &y };
        store
            .task_create(&task(prefix, &format!("n{n}"), &workflow, kind))
            .await
            .expect("create");
    }
    store
        .task_cancel(&format!("{prefix}-n2"))
        .await
        .expect("cancel");
    let ids = |page: &crate::agent_queue::TaskPage| -> Vec<String> {
        let cut = prefix.len() + 1;
        page.tasks.iter().map(|t| t.id[cut..].to_string()).collect()
    };
    let all = TaskFilter::default();
    let first = store.task_list(&workflow, &all, 0, 3).await.expect("list");
    assert_eq!(
        (ids(&first), first.next),
        (vec!["n0".into(), "n1".into(), "n2".into()], Some(3))
    );
    let rest = store.task_list(&workflow, &all, 3, 10).await.expect("list");
    assert_eq!(
        (ids(&rest), rest.next),
        (
            vec!["n3".into(), "n4".into(), "n5".into(), "n6".into()],
            None
        )
    );
    let pending_x = TaskFilter {
        status: Some(TaskState::Pending),
        kind: Some(x),
    };
    let page = store
        .task_list(&workflow, &pending_x, 0, 2)
        .await
        .expect("list");
    assert_eq!(
        (ids(&page), page.next),
        (vec!["n0".into(), "n4".into()], Some(5))
    );
    let page = store
        .task_list(&workflow, &pending_x, 5, 2)
        .await
        .expect("list");
    assert_eq!((ids(&page), page.next), (vec!["n6".into()], None));
    let cancelled = TaskFilter {
        status: Some(TaskState::Cancelled),
        kind: None,
    };
    let page = store
        .task_list(&workflow, &cancelled, 0, 100)
        .await
        .expect("list");
    assert_eq!(ids(&page), vec!["n2".to_string()]);
    let none = store
        .task_list(&format!("{prefix}-nothing"), &all, 0, 10)
        .await
        .expect("list");
    assert_eq!((none.tasks.len(), none.next), (0, None));

    let set: Map<String, Value> = serde_json::from_value(json!({"version": "2"})).expect("map");
    let metadata = store.workflow_metadata(&workflow, &set).await.expect("set");
    assert_eq!(metadata["version"], "2");
    assert_eq!(metadata["workflow_type"], "generic");
    let at = |key: &str| metadata[key].as_str().expect("a time").to_string();
    assert!(at("initialized_at").ends_with('Z') && at("initialized_at") <= at("last_updated"));
}

fn task(prefix: &str, id: &str, workflow: &str, kind: &str) -> NewTask {
    NewTask {
        id: format!("{prefix}-{id}"),
        workflow: workflow.to_string(),
        kind: kind.to_string(),
        data: Value::Null,
        parent: None,
        claim_timeout_ms: 60_000,
    }
}

fn instance(prefix: &str, kind: &str) -> AgentItem {
    AgentItem {
        id: format!("{prefix}-i1"),
        kind: kind.to_string(),
        input: json!({}),
        claim_timeout_ms: 60_000,
        origin: AgentOrigin::Instance {
            session: prefix.to_string(),
            run: "run".into(),
            group: 0,
            task: 0,
            task_id: "t".into(),
            instance: 0,
            attempt: 1,
        },
    }
}
