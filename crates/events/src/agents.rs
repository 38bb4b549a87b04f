//! Work that external agents claim (seed 003): items wait by type; an agent claims the oldest
//! of the types it takes, atomically, and gets a token; only the token's holder may settle or
//! release the item, until its claim times out.
//!
//! The queue is part of the [`crate::Store`]: `agent_offer`, `agent_claim`, `agent_settle`,
//! `agent_release` and `agent_expired`. Its in-memory form is [`AgentQueue`]; Redis keeps the
//! same rules in Lua (`redis_scripts.rs`), both checked by the conformance suite.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// One item for agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentItem {
    /// Unique among items: offering an id again changes nothing.
    pub id: String,
    /// The agent type that takes it (`agent.type` of its task).
    #[serde(rename = "type")]
    pub kind: String,
    /// What the agent works on: the instance's rendered input.
    pub input: Value,
    /// A claim not settled within this long is released (and counts as an attempt).
    pub claim_timeout_ms: u64,
    /// Where it comes from, so its outcome can be recorded there.
    pub origin: AgentOrigin,
}

/// Where an item comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "from")]
pub enum AgentOrigin {
    /// An attempt of an instance of a session's task with `"executor": "agent"`.
    Instance {
        /// The session id.
        session: String,
        /// Its run.
        run: String,
        /// The task's group, by index.
        group: usize,
        /// The task, by index in its group.
        task: usize,
        /// Its id.
        task_id: String,
        /// The instance.
        instance: u64,
        /// The attempt.
        attempt: u32,
    },
}

/// An item claimed by an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentClaim {
    /// Settles or releases the item while the claim holds.
    pub token: String,
    /// The agent holding it.
    pub agent: String,
    /// The item.
    pub item: AgentItem,
    /// How many times it was claimed, this claim included.
    pub claims: u32,
}

/// Why a token cannot settle or release its item.
pub fn stale_token(token: &str) -> String {
    format!(
        "claim token `{token}` does not hold an item: it was settled or released already, or it timed out (and the item was released)"
    )
}

/// The queue in memory: the embedded twin of the Redis keys.
#[derive(Debug, Default)]
pub(crate) struct AgentQueue {
    /// Every item offered and not settled, with its claim if it has one.
    items: HashMap<String, Entry>,
    /// Item ids waiting, oldest first, per type.
    pending: HashMap<String, VecDeque<String>>,
    /// Claims by deadline (ms on the store's clock).
    deadlines: BTreeSet<(u64, String)>,
    /// Item id per claim token.
    tokens: HashMap<String, String>,
}

#[derive(Debug)]
struct Entry {
    item: AgentItem,
    claims: u32,
    /// Token, agent and deadline of its claim.
    claim: Option<(String, String, u64)>,
}

impl AgentQueue {
    pub(crate) fn offer(&mut self, items: &[AgentItem]) {
        for item in items {
            if self.items.contains_key(&item.id) {
                continue;
            }
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
                },
            );
        }
    }

    pub(crate) fn claim(
        &mut self,
        agent: &str,
        types: &[String],
        token: &str,
        now: u64,
    ) -> Option<AgentClaim> {
        for kind in types {
            let Some(waiting) = self.pending.get_mut(kind) else {
                continue;
            };
            while let Some(id) = waiting.pop_front() {
                let Some(entry) = self.items.get_mut(&id) else {
                    continue;
                };
                let deadline = now + entry.item.claim_timeout_ms;
                entry.claims += 1;
                entry.claim = Some((token.to_string(), agent.to_string(), deadline));
                self.deadlines.insert((deadline, id.clone()));
                self.tokens.insert(token.to_string(), id);
                return Some(AgentClaim {
                    token: token.to_string(),
                    agent: agent.to_string(),
                    item: entry.item.clone(),
                    claims: entry.claims,
                });
            }
        }
        None
    }

    /// The claim `token` holds, taken off the queue with its item.
    pub(crate) fn settle(&mut self, token: &str) -> Option<AgentClaim> {
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

    /// Puts the item `token` holds back at the head of its type's queue.
    pub(crate) fn release(&mut self, token: &str) -> Option<AgentItem> {
        let id = self.tokens.remove(token)?;
        let entry = self.items.get_mut(&id)?;
        let (_, _, deadline) = entry.claim.take()?;
        self.deadlines.remove(&(deadline, id.clone()));
        self.pending
            .entry(entry.item.kind.clone())
            .or_default()
            .push_front(id);
        Some(entry.item.clone())
    }

    /// Claims past their deadline at `now`, at most `limit`, taken off the queue.
    pub(crate) fn expired(&mut self, now: u64, limit: usize) -> Vec<AgentClaim> {
        let due: Vec<(u64, String)> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .take(limit)
            .cloned()
            .collect();
        due.into_iter()
            .filter_map(|(_, id)| {
                let token = self.items.get(&id)?.claim.as_ref()?.0.clone();
                self.settle(&token)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{AgentItem, AgentOrigin, AgentQueue};
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
        let mut queue = AgentQueue::default();
        queue.offer(&[item("x", 100), item("y", 500)]);
        let types = ["analyze".to_string()];
        assert!(queue.claim("a", &types, "t1", 1_000).is_some());
        assert!(queue.claim("a", &types, "t2", 1_000).is_some());
        assert!(queue.expired(1_099, 10).is_empty());
        let expired = queue.expired(1_100, 10);
        assert_eq!(expired.len(), 1);
        assert_eq!(
            (expired[0].item.id.as_str(), expired[0].token.as_str()),
            ("x", "t1")
        );
        assert!(queue.settle("t1").is_none());
        assert!(queue.settle("t2").is_some());
    }
}
