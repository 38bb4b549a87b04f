//! [`TaskManager`](crate::TaskManager): tasks created in workflows, with parents, claimed by
//! agents through the [`AgentQueue`](crate::AgentQueue), counted and described.

use crate::agent_queue::{AgentReport, ManagedTask, NewTask, TaskState, Wanted};
use crate::error::{Error, Result};
use crate::store::{AgentQueue, TaskManager};
use crate::AgentClaim;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The task manager, with workflows and types named after `prefix`: creation, parents of the
/// same workflow, claims that set the status, completion and failure with their answers, a
/// release and a timed-out claim back to pending, cancel, counts by status and type, metadata.
/// Each step starts from what the one before left.
pub async fn task_suite(store: &(impl AgentQueue + TaskManager + ?Sized), prefix: &str) {
    let tasks = Tasks::new(prefix);
    tasks.created(store).await;
    tasks.completed_and_failed(store).await;
    tasks.timed_out_and_released(store).await;
    tasks.cancelled(store).await;
    tasks.summarized(store).await;
    tasks.described(store).await;
}

/// The workflow the suite works in: a root of type `analyze`, three children of `validate`.
struct Tasks {
    prefix: String,
    workflow: String,
    other: String,
    analyze: String,
    validate: String,
    root: NewTask,
    /// The children's ids, in creation order.
    children: Vec<String>,
}

/// A refusal that says `says`.
fn refused(result: Result<()>, says: &str) {
    match result {
        Err(Error::Refused { message, .. }) => {
            assert!(message.contains(says), "`{message}` says `{says}`")
        }
        other => panic!("refused ({says}), not {other:?}"),
    }
}

impl Tasks {
    fn new(prefix: &str) -> Self {
        let workflow = format!("{prefix}-wf");
        let analyze = format!("{prefix}-analyze");
        let mut tasks = Self {
            prefix: prefix.to_string(),
            other: format!("{prefix}-other"),
            validate: format!("{prefix}-validate"),
            root: NewTask {
                id: String::new(),
                workflow: workflow.clone(),
                kind: analyze.clone(),
                data: Value::Null,
                parent: None,
                claim_timeout_ms: 0,
            },
            workflow,
            analyze,
            children: ["child-1", "child-2", "child-3"]
                .iter()
                .map(|c| format!("{prefix}-{c}"))
                .collect(),
        };
        tasks.root = tasks.new_task("root", &tasks.analyze.clone(), None, 60_000);
        tasks
    }

    fn new_task(&self, id: &str, kind: &str, parent: Option<&str>, timeout_ms: u64) -> NewTask {
        NewTask {
            id: format!("{}-{id}", self.prefix),
            workflow: self.workflow.clone(),
            kind: kind.to_string(),
            data: json!({"file": id, "big": 12345678901234567_u64}),
            parent: parent.map(|p| format!("{}-{p}", self.prefix)),
            claim_timeout_ms: timeout_ms,
        }
    }

    async fn claim(
        &self,
        store: &(impl AgentQueue + ?Sized),
        kind: &str,
        token: &str,
    ) -> Option<AgentClaim> {
        let token = format!("{}-{token}", self.prefix);
        let types = vec![kind.to_string()];
        store
            .agent_claim(
                "agent-7",
                Wanted {
                    types: &types,
                    workflow: None,
                },
                &token,
            )
            .await
            .expect("claim")
    }

    async fn status(&self, store: &(impl TaskManager + ?Sized), id: &str) -> ManagedTask {
        store.task_get(id).await.expect("get").expect("a task")
    }

    /// Created pending with their data exactly, parents only of the same workflow, children
    /// in creation order.
    async fn created(&self, store: &(impl TaskManager + ?Sized)) {
        let root = &self.root;
        store.task_create(root).await.expect("create root");
        refused(store.task_create(root).await, "exists already");
        let orphan = self.new_task("orphan", &self.analyze, Some("nobody"), 60_000);
        refused(store.task_create(&orphan).await, "does not exist");
        let mut stranger = self.new_task("stranger", &self.analyze, Some("root"), 60_000);
        stranger.workflow = self.other.clone();
        refused(store.task_create(&stranger).await, "of workflow");
        for (id, timeout) in [("child-1", 60_000), ("child-2", 1), ("child-3", 60_000)] {
            let child = self.new_task(id, &self.validate, Some("root"), timeout);
            store.task_create(&child).await.expect("create child");
        }
        let got = self.status(store, &root.id).await;
        assert_eq!(
            (got.status, &got.data, &got.parent_id, got.claims),
            (TaskState::Pending, &root.data, &None, 0),
            "created pending, its data exactly"
        );
        let none = format!("{}-none", self.prefix);
        assert!(store.task_get(&none).await.expect("get").is_none());
        let children = store.task_children(&root.id).await.expect("children");
        let ids: Vec<&str> = children.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, self.children, "children in creation order");
        assert!(children
            .iter()
            .all(|c| c.parent_id.as_deref() == Some(root.id.as_str())));
    }

    /// Claimed: in progress, by its agent, the claim saying where it comes from; completed with
    /// its result, failed with its error.
    async fn completed_and_failed(&self, store: &(impl AgentQueue + TaskManager + ?Sized)) {
        let root = &self.root.id;
        let taken = self
            .claim(store, &self.analyze, "r1")
            .await
            .expect("the root");
        assert_eq!(&taken.item.id, root);
        let origin = crate::AgentOrigin::Task {
            workflow: self.workflow.clone(),
            parent: None,
        };
        assert_eq!(taken.item.origin, origin);
        let held = self.status(store, root).await;
        assert_eq!(
            (held.status, held.locked_by.as_deref(), held.claims),
            (TaskState::InProgress, Some("agent-7"), 1)
        );
        let result = json!({"output": "results.json", "n": 0.1});
        let report = AgentReport::Completed(result.clone());
        let settled = store.agent_settle(&taken.token, &report).await;
        settled.expect("settle").expect("held");
        let done = self.status(store, root).await;
        assert_eq!(
            (done.status, done.result.as_ref()),
            (TaskState::Completed, Some(&result))
        );
        assert!(done.completed_at_ms.is_some());

        let one = self
            .claim(store, &self.validate, "c1")
            .await
            .expect("child 1");
        let report = AgentReport::Failed("schema mismatch".into());
        let settled = store.agent_settle(&one.token, &report).await;
        settled.expect("settle").expect("held");
        let failed = self.status(store, &self.children[0]).await;
        assert_eq!(
            (failed.status, failed.error.as_deref()),
            (TaskState::Failed, Some("schema mismatch"))
        );
    }

    /// Child 2's claim times out: pending again, its late report refused, claimed again first;
    /// released: pending again.
    async fn timed_out_and_released(&self, store: &(impl AgentQueue + TaskManager + ?Sized)) {
        let second = &self.children[1];
        let two = self
            .claim(store, &self.validate, "c2")
            .await
            .expect("child 2");
        assert_eq!(&two.item.id, second);
        tokio::time::sleep(Duration::from_millis(30)).await;
        store.agent_expire(1_000).await.expect("expire");
        let back = self.status(store, second).await;
        assert_eq!(
            (back.status, back.locked_by.as_deref(), back.claims),
            (TaskState::Pending, None, 1)
        );
        let late = AgentReport::Completed(json!(1));
        assert!(store
            .agent_settle(&two.token, &late)
            .await
            .expect("settle")
            .is_none());
        let retaken = self
            .claim(store, &self.validate, "c2b")
            .await
            .expect("child 2");
        assert_eq!((&retaken.item.id, retaken.claims), (second, 2));
        let released = store.agent_release(&retaken.token).await;
        released.expect("release").expect("held");
        assert_eq!(self.status(store, second).await.status, TaskState::Pending);
    }

    /// Cancelled: child 2 claimed, child 3 pending; neither is offered any more, and what is
    /// cancelled or completed already, or does not exist, is refused.
    async fn cancelled(&self, store: &(impl AgentQueue + TaskManager + ?Sized)) {
        let (second, third) = (&self.children[1], &self.children[2]);
        let three = self
            .claim(store, &self.validate, "c3")
            .await
            .expect("a child");
        assert_eq!(&three.item.id, second, "the released one first");
        store.task_cancel(second).await.expect("cancel claimed");
        store.task_cancel(third).await.expect("cancel pending");
        refused(store.task_cancel(third).await, "cancelled already");
        refused(store.task_cancel(&self.root.id).await, "completed already");
        let none = format!("{}-none", self.prefix);
        refused(store.task_cancel(&none).await, "does not exist");
        let late = AgentReport::Completed(json!(1));
        assert!(store
            .agent_settle(&three.token, &late)
            .await
            .expect("settle")
            .is_none());
        assert!(self.claim(store, &self.validate, "c4").await.is_none());
        assert_eq!(self.status(store, third).await.status, TaskState::Cancelled);
    }

    /// The workflow's counts by status and type; another workflow has none.
    async fn summarized(&self, store: &(impl TaskManager + ?Sized)) {
        let summary = store.task_summary(&self.workflow).await.expect("summary");
        let counts = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        assert_eq!(summary.total_tasks, 4);
        let by_status = counts(&[
            ("pending", 0),
            ("in_progress", 0),
            ("completed", 1),
            ("failed", 1),
            ("cancelled", 2),
        ]);
        assert_eq!(summary.status_counts, by_status);
        let (analyze, validate) = (self.analyze.as_str(), self.validate.as_str());
        assert_eq!(summary.type_counts, counts(&[(analyze, 1), (validate, 3)]));
        assert_eq!(
            summary.by_type[validate],
            counts(&[("failed", 1), ("cancelled", 2)])
        );
        let other = store.task_summary(&self.other).await.expect("summary");
        assert_eq!(other.total_tasks, 0);
    }

    /// Metadata: keys set are replaced, others kept; another workflow has none.
    async fn described(&self, store: &(impl TaskManager + ?Sized)) {
        let object = |value: Value| -> Map<String, Value> {
            serde_json::from_value(value).expect("an object")
        };
        // The workflow's own times and type (`with_times`) are left out here: `wanted.rs`.
        let mine = |mut metadata: Map<String, Value>| {
            for key in ["initialized_at", "last_updated", "workflow_type"] {
                metadata.remove(key);
            }
            metadata
        };
        let set = object(json!({"version": "2.0", "n": 3}));
        let wf = &self.workflow;
        assert_eq!(
            mine(store.workflow_metadata(wf, &set).await.expect("set")),
            set
        );
        let more = object(json!({"version": "2.1", "env": "prod"}));
        let merged = mine(store.workflow_metadata(wf, &more).await.expect("set"));
        assert_eq!(
            Value::Object(merged),
            json!({"version": "2.1", "n": 3, "env": "prod"}),
            "keys set are replaced, others kept"
        );
        let other = store.workflow_metadata(&self.other, &Map::new()).await;
        assert!(other.expect("read").is_empty());
    }
}
