//! The live state a session machine reports while it runs ([`LiveState`]).

use super::{GroupSlot, SessionMachine};
use crate::live::{LiveCounts, LiveGroup, LiveGroupStatus, LiveState, LiveStatus};
use crate::machine::GroupStatus;
use indexmap::IndexMap;

impl SessionMachine {
    /// The session's live state as this machine sees it (times and rate are the runtime's).
    pub fn live(&self, session_id: &str) -> LiveState {
        let mut instances = LiveCounts::default();
        let groups = self
            .plans
            .iter()
            .enumerate()
            .map(|(g, plan)| {
                let (status, tasks) = match &self.slots[g] {
                    GroupSlot::Waiting => (LiveGroupStatus::Waiting, None),
                    GroupSlot::Skipped(_) => (LiveGroupStatus::Skipped, None),
                    GroupSlot::Started(machine) => {
                        let status = match machine.status() {
                            None => LiveGroupStatus::Running,
                            Some(GroupStatus::Completed) => LiveGroupStatus::Completed,
                            Some(GroupStatus::Failed) => LiveGroupStatus::Failed,
                            Some(GroupStatus::TimedOut) => LiveGroupStatus::TimedOut,
                            Some(GroupStatus::Cancelled) => LiveGroupStatus::Cancelled,
                        };
                        (status, Some(machine.tasks()))
                    }
                };
                let tasks: IndexMap<String, LiveCounts> = plan
                    .setups
                    .iter()
                    .enumerate()
                    .map(|(t, setup)| {
                        let counts =
                            tasks.map_or_else(LiveCounts::default, |runs| LiveCounts::of(&runs[t]));
                        instances = instances.add(counts);
                        (setup.id.clone(), counts)
                    })
                    .collect();
                let group = LiveGroup {
                    status,
                    tasks,
                    name: plan.labels.name.clone(),
                };
                (plan.id.clone(), group)
            })
            .collect();
        LiveState {
            instances,
            groups,
            status: LiveStatus::Running,
            description: self.description.clone(),
            metadata: self.metadata.clone(),
            ..LiveState::pending(session_id, None)
        }
    }
}
