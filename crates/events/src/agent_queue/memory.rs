//! The queue and the task manager in memory: the embedded twin of the Redis keys.

use super::{
    AgentClaim, AgentItem, AgentReport, ManagedTask, NewTask, Reported, TaskFilter, TaskPage,
    TaskState, Wanted, WorkflowSummary,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// How long an instance's settled item id is kept, so it is not offered anew (ms).
const SETTLED_KEPT_MS: u64 = 3_600_000;

/// The queue and the task manager in memory: the embedded twin of the Redis keys. The state
/// file keeps it whole as JSON (its counts are made again from the tasks, [`Self::recount`]).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct MemoryAgentQueue {
    /// Every item offered and not settled, with its claim if it has one.
    items: HashMap<String, Entry>,
    /// Item ids waiting, oldest first, per type.
    pending: HashMap<String, VecDeque<String>>,
    /// Claims by deadline (ms on the store's clock).
    deadlines: BTreeSet<(u64, String)>,
    /// Item id per claim token.
    tokens: HashMap<String, String>,
    /// Instances' reports by id, with when they may be taken (ms).
    reports: HashMap<String, (Reported, u64)>,
    /// Instances' item ids settled in the last hour, with when: a range delivered again does
    /// not offer them anew.
    settled: HashMap<String, u64>,
    /// The task manager's tasks.
    tasks: HashMap<String, ManagedTask>,
    /// Child task ids per parent, in creation order.
    children: HashMap<String, Vec<String>>,
    /// Tasks per status and type, per workflow.
    #[serde(skip)]
    counts: HashMap<String, BTreeMap<(TaskState, String), u64>>,
    /// Metadata per workflow.
    metadata: HashMap<String, Map<String, Value>>,
    /// Task ids per workflow, in creation order.
    workflow_tasks: HashMap<String, Vec<String>>,
    /// When each workflow was first touched and last changed (ms).
    times: HashMap<String, (u64, u64)>,
    /// Counts places in line (see [`Entry::seq`]).
    counter: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    item: AgentItem,
    claims: u32,
    /// Token, agent and deadline of its claim.
    claim: Option<(String, String, u64)>,
    /// Its place in line across types, lower first: queued items count up, requeued ones down
    /// from zero (first in line). Each type's queue is in this order.
    seq: i64,
}

impl MemoryAgentQueue {
    pub(crate) fn offer(&mut self, items: &[AgentItem], now: u64) {
        self.settled
            .retain(|_, at| now.saturating_sub(*at) < SETTLED_KEPT_MS);
        for item in items {
            if self.items.contains_key(&item.id) || self.settled.contains_key(&item.id) {
                continue;
            }
            self.counter += 1;
            self.pending
                .entry(item.kind.clone())
                .or_default()
                .push_back(item.id.clone());
            self.items.insert(
                item.id.clone(),
                Entry {
                    item: item.clone(),
                    claims: 0,
                    claim: None,
                    seq: self.counter,
                },
            );
        }
    }

    pub(crate) fn claim(
        &mut self,
        agent: &str,
        wanted: Wanted<'_>,
        token: &str,
        now: u64,
    ) -> Option<AgentClaim> {
        // Claims past their deadline end first, as in Redis.
        self.expire(now, 64);
        let (kind, at) = self.next_wanted(wanted)?;
        let id = self.pending.get_mut(&kind)?.remove(at)?;
        let entry = self.items.get_mut(&id)?;
        let deadline = now + entry.item.claim_timeout_ms;
        entry.claims += 1;
        entry.claim = Some((token.to_string(), agent.to_string(), deadline));
        let claim = AgentClaim {
            token: token.to_string(),
            agent: agent.to_string(),
            item: entry.item.clone(),
            claims: entry.claims,
        };
        self.deadlines.insert((deadline, id.clone()));
        self.tokens.insert(token.to_string(), id.clone());
        self.set_status(&id, TaskState::InProgress, now, |task| {
            task.locked_by = Some(agent.to_string());
            task.locked_at_ms = Some(now);
            task.claims = claim.claims;
        });
        Some(claim)
    }

    /// Where the item a claim takes waits: its type, and its place in that type's queue. With
    /// types, the first waiting item of the first that has one; without, the waiting item with
    /// the lowest place in line of every type. With a workflow, only its tasks.
    fn next_wanted(&self, wanted: Wanted<'_>) -> Option<(String, usize)> {
        let first_of = |kind: &String| {
            let waiting = self.pending.get(kind)?;
            let at = waiting.iter().position(|id| match wanted.workflow {
                None => true,
                Some(workflow) => self.tasks.get(id).is_some_and(|t| t.workflow == workflow),
            })?;
            Some((kind.clone(), at, self.items.get(&waiting[at])?.seq))
        };
        if !wanted.types.is_empty() {
            let (kind, at, _) = wanted.types.iter().find_map(first_of)?;
            return Some((kind, at));
        }
        self.pending
            .keys()
            .filter_map(first_of)
            .min_by_key(|(_, _, seq)| *seq)
            .map(|(kind, at, _)| (kind, at))
    }

    /// The claim `token` holds, ended with `report`: a task takes its status, an instance's
    /// report waits for a worker to record it.
    pub(crate) fn settle(
        &mut self,
        token: &str,
        report: &AgentReport,
        now: u64,
    ) -> Option<AgentClaim> {
        let claim = self.take(token)?;
        let (state, _, _) = report.for_task();
        let is_task = self.set_status(&claim.item.id, state, now, |task| {
            task.completed_at_ms = Some(now);
            match report {
                AgentReport::Completed(result) => task.result = Some(result.clone()),
                AgentReport::Failed(error) => task.error = Some(error.clone()),
                AgentReport::TimedOut => task.error = Some(report.for_task().2),
            }
        });
        if !is_task {
            self.report(&claim, report.clone(), now);
        }
        Some(claim)
    }

    /// Puts the item `token` holds back at the head of its type's queue.
    pub(crate) fn release(&mut self, token: &str, now: u64) -> Option<AgentItem> {
        let id = self.tokens.remove(token)?;
        let entry = self.items.get_mut(&id)?;
        let (_, _, deadline) = entry.claim.take()?;
        let item = entry.item.clone();
        self.deadlines.remove(&(deadline, id.clone()));
        self.requeue(&id, now);
        Some(item)
    }

    /// Ends claims past their deadline at `now`, at most `limit`: an instance's attempt is
    /// reported timed out, a task is pending again. Returns how many.
    pub(crate) fn expire(&mut self, now: u64, limit: usize) -> usize {
        let due: Vec<(u64, String)> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .take(limit)
            .cloned()
            .collect();
        for (deadline, id) in &due {
            if self.tasks.contains_key(id) {
                let Some(entry) = self.items.get_mut(id) else {
                    continue;
                };
                if let Some((token, _, _)) = entry.claim.take() {
                    self.tokens.remove(&token);
                }
                self.deadlines.remove(&(*deadline, id.clone()));
                self.requeue(id, now);
            } else if let Some(token) = self
                .items
                .get(id)
                .and_then(|entry| entry.claim.as_ref())
                .map(|claim| claim.0.clone())
            {
                if let Some(claim) = self.take(&token) {
                    self.report(&claim, AgentReport::TimedOut, now);
                }
            }
        }
        due.len()
    }

    /// Reports due at `now`, at most `limit`, leased for `lease_ms`.
    pub(crate) fn reports(&mut self, now: u64, limit: usize, lease_ms: u64) -> Vec<Reported> {
        let mut due: Vec<(&String, &mut (Reported, u64))> = self
            .reports
            .iter_mut()
            .filter(|(_, (_, at))| *at <= now)
            .collect();
        due.sort_by(|a, b| a.0.cmp(b.0));
        due.into_iter()
            .take(limit)
            .map(|(_, (reported, at))| {
                *at = now + lease_ms;
                reported.clone()
            })
            .collect()
    }

    /// Deletes recorded reports.
    pub(crate) fn reported(&mut self, ids: &[String]) {
        for id in ids {
            self.reports.remove(id);
        }
    }

    pub(crate) fn create(&mut self, task: &NewTask, now: u64) -> Result<(), String> {
        if self.tasks.contains_key(&task.id) {
            return Err(format!("task `{}` exists already", task.id));
        }
        if let Some(parent) = &task.parent {
            let theirs = &self
                .tasks
                .get(parent)
                .ok_or_else(|| format!("parent task `{parent}` does not exist"))?
                .workflow;
            if *theirs != task.workflow {
                return Err(format!(
                    "parent task `{parent}` is of workflow `{theirs}`, not `{}`",
                    task.workflow
                ));
            }
            self.children
                .entry(parent.clone())
                .or_default()
                .push(task.id.clone());
        }
        self.workflow_tasks
            .entry(task.workflow.clone())
            .or_default()
            .push(task.id.clone());
        self.touch(&task.workflow, now);
        self.tasks.insert(
            task.id.clone(),
            ManagedTask {
                id: task.id.clone(),
                workflow: task.workflow.clone(),
                kind: task.kind.clone(),
                status: TaskState::Pending,
                parent_id: task.parent.clone(),
                data: task.data.clone(),
                locked_by: None,
                locked_at_ms: None,
                created_at_ms: now,
                updated_at_ms: now,
                completed_at_ms: None,
                claims: 0,
                claim_timeout_ms: task.claim_timeout_ms,
                result: None,
                error: None,
            },
        );
        *self
            .counts
            .entry(task.workflow.clone())
            .or_default()
            .entry((TaskState::Pending, task.kind.clone()))
            .or_default() += 1;
        self.offer(&[task.item()], now);
        Ok(())
    }

    /// Makes the counts per workflow again from the tasks (after reading them from a file).
    pub(crate) fn recount(&mut self) {
        self.counts.clear();
        for task in self.tasks.values() {
            *self
                .counts
                .entry(task.workflow.clone())
                .or_default()
                .entry((task.status, task.kind.clone()))
                .or_default() += 1;
        }
    }

    pub(crate) fn task(&self, id: &str) -> Option<ManagedTask> {
        self.tasks.get(id).cloned()
    }

    pub(crate) fn children(&self, id: &str) -> Vec<ManagedTask> {
        self.children
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|child| self.task(child))
            .collect()
    }

    pub(crate) fn cancel(&mut self, id: &str, now: u64) -> Result<(), String> {
        let status = self
            .tasks
            .get(id)
            .ok_or_else(|| format!("task `{id}` does not exist"))?
            .status;
        if !matches!(status, TaskState::Pending | TaskState::InProgress) {
            return Err(format!("task `{id}` is {} already", status.as_str()));
        }
        if let Some(entry) = self.items.remove(id) {
            if let Some((token, _, deadline)) = entry.claim {
                self.tokens.remove(&token);
                self.deadlines.remove(&(deadline, id.to_string()));
            }
            if let Some(waiting) = self.pending.get_mut(&entry.item.kind) {
                waiting.retain(|waiting| waiting != id);
            }
        }
        self.set_status(id, TaskState::Cancelled, now, |task| {
            task.completed_at_ms = Some(now);
            task.locked_by = None;
            task.locked_at_ms = None;
        });
        Ok(())
    }

    pub(crate) fn summary(&self, workflow: &str) -> WorkflowSummary {
        let counts = self.counts.get(workflow).into_iter().flatten();
        WorkflowSummary::of(
            workflow,
            counts.map(|((state, kind), count)| (*state, kind.clone(), *count)),
        )
    }

    /// Sets `set`'s keys in the workflow's metadata (a change of the workflow); returns it
    /// with the workflow's times ([`super::with_times`]).
    pub(crate) fn metadata(
        &mut self,
        workflow: &str,
        set: &Map<String, Value>,
        now: u64,
    ) -> Map<String, Value> {
        if !set.is_empty() {
            self.touch(workflow, now);
        }
        let metadata = self.metadata.entry(workflow.to_string()).or_default();
        metadata.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        super::with_times(metadata.clone(), self.times.get(workflow).copied())
    }

    /// A page of the workflow's tasks in creation order, from position `from`: those `filter`
    /// keeps, at most `limit`, looking at 10,000 tasks at most (as the Redis script does).
    pub(crate) fn list(
        &self,
        workflow: &str,
        filter: &TaskFilter,
        from: u64,
        limit: usize,
    ) -> TaskPage {
        let ids = self
            .workflow_tasks
            .get(workflow)
            .map_or(&[][..], Vec::as_slice);
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(ids.len());
        let mut tasks = Vec::new();
        let mut at = start;
        for id in ids[start..].iter().take(super::LIST_SCAN) {
            if tasks.len() >= limit {
                break;
            }
            if let Some(task) = self.tasks.get(id).filter(|task| filter.keeps(task)) {
                tasks.push(task.clone());
            }
            at += 1;
        }
        TaskPage {
            tasks,
            next: (at < ids.len()).then_some(at as u64),
        }
    }

    /// The workflow changed at `now`.
    fn touch(&mut self, workflow: &str, now: u64) {
        let times = self.times.entry(workflow.to_string()).or_insert((now, now));
        times.1 = now;
    }

    /// Takes the claim `token` holds off the queue with its item.
    fn take(&mut self, token: &str) -> Option<AgentClaim> {
        let id = self.tokens.remove(token)?;
        let entry = self.items.remove(&id)?;
        let (token, agent, deadline) = entry.claim?;
        self.deadlines.remove(&(deadline, id));
        Some(AgentClaim {
            token,
            agent,
            item: entry.item,
            claims: entry.claims,
        })
    }

    fn report(&mut self, claim: &AgentClaim, outcome: AgentReport, now: u64) {
        self.settled.insert(claim.item.id.clone(), now);
        let reported = Reported {
            agent: claim.agent.clone(),
            claims: claim.claims,
            outcome,
            item: claim.item.clone(),
        };
        self.reports.insert(claim.item.id.clone(), (reported, 0));
    }

    /// Puts item `id` back first in line of its type; a task is pending again.
    fn requeue(&mut self, id: &str, now: u64) {
        self.counter += 1;
        let first = -self.counter;
        let Some(entry) = self.items.get_mut(id) else {
            return;
        };
        entry.seq = first;
        self.pending
            .entry(entry.item.kind.clone())
            .or_default()
            .push_front(id.to_string());
        self.set_status(id, TaskState::Pending, now, |task| {
            task.locked_by = None;
            task.locked_at_ms = None;
        });
    }

    /// Moves task `id` to `state`, in its record (changed by `change` too) and its workflow's
    /// counts; false when `id` is no task (an instance's item).
    fn set_status(
        &mut self,
        id: &str,
        state: TaskState,
        now: u64,
        change: impl FnOnce(&mut ManagedTask),
    ) -> bool {
        let Some(task) = self.tasks.get_mut(id) else {
            return false;
        };
        let counts = self.counts.entry(task.workflow.clone()).or_default();
        if let Some(count) = counts.get_mut(&(task.status, task.kind.clone())) {
            *count = count.saturating_sub(1);
        }
        *counts.entry((state, task.kind.clone())).or_default() += 1;
        task.status = state;
        task.updated_at_ms = now;
        change(task);
        let workflow = task.workflow.clone();
        self.touch(&workflow, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryAgentQueue;
    use crate::agent_queue::{AgentItem, AgentOrigin, AgentReport};
    use serde_json::json;

    fn item(id: &str, timeout: u64) -> AgentItem {
        AgentItem {
            id: id.into(),
            kind: "analyze".into(),
            input: json!({}),
            claim_timeout_ms: timeout,
            origin: AgentOrigin::Instance {
                session: "s".into(),
                run: "r".into(),
                group: 0,
                task: 0,
                task_id: "t".into(),
                instance: 0,
                attempt: 1,
            },
        }
    }

    #[test]
    fn claims_expire_at_their_deadline_and_only_then() {
        let mut queue = MemoryAgentQueue::default();
        queue.offer(&[item("x", 100), item("y", 500)], 1_000);
        let types = ["analyze".to_string()];
        let wanted = super::Wanted {
            types: &types,
            workflow: None,
        };
        assert!(queue.claim("a", wanted, "t1", 1_000).is_some());
        assert!(queue.claim("a", wanted, "t2", 1_000).is_some());
        assert_eq!(queue.expire(1_099, 10), 0);
        assert_eq!(queue.expire(1_100, 10), 1);
        let reported = queue.reports(1_100, 10, 1_000);
        assert_eq!(reported.len(), 1);
        assert_eq!(
            (reported[0].item.id.as_str(), &reported[0].outcome),
            ("x", &AgentReport::TimedOut)
        );
        let done = AgentReport::Completed(json!(1));
        assert!(queue.settle("t1", &done, 1_100).is_none());
        assert!(queue.settle("t2", &done, 1_100).is_some());
    }
}
