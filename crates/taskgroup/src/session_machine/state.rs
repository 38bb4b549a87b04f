//! The live state a session machine reports while it runs ([`LiveState`]): counts, the run's
//! times by the store's clock, rate and ETA, when each task ran and the latest failures.

use super::finish::{millis, ran};
use super::{GroupSlot, SessionMachine};
use crate::live::{
    iso8601, LiveCounts, LiveFailure, LiveGroup, LiveGroupStatus, LiveSpan, LiveState, LiveStatus,
    LATEST_FAILURES,
};
use crate::machine::GroupStatus;
use indexmap::IndexMap;

impl SessionMachine {
    /// The session's live state as of the runtime's clock ([`Self::advance`]).
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
        let mut state = LiveState {
            instances,
            groups,
            status: if self.paused {
                LiveStatus::Paused
            } else {
                LiveStatus::Running
            },
            description: self.description.clone(),
            metadata: self.metadata.clone(),
            ..LiveState::pending(session_id, self.facts.run.clone())
        };
        self.times(&mut state);
        self.timeline(&mut state);
        state
    }

    /// Puts in the live state the run's times, and the rate and ETA since it started.
    fn times(&self, state: &mut LiveState) {
        let settled = state.instances.succeeded + state.instances.failed;
        let seconds = self.now.as_secs_f64();
        if settled > 0 && seconds > 0.0 {
            let rate = settled as f64 / seconds;
            state.rate_per_s = Some(rate);
            state.eta_s = Some(state.instances.total.saturating_sub(settled) as f64 / rate);
        }
        state.submitted_at.clone_from(&self.facts.submitted_at);
        state.started_at = Some(iso8601(self.facts.started_ms));
        state.updated_at = Some(iso8601(
            self.facts.started_ms.saturating_add(millis(self.now)),
        ));
    }

    /// Puts in the live state when each task that started ran, and the latest failures.
    fn timeline(&self, state: &mut LiveState) {
        let mut latest: Vec<LiveFailure> = Vec::new();
        for (g, plan) in self.plans.iter().enumerate() {
            let Some(machine) = self.group(g) else {
                continue;
            };
            for (t, run) in machine.tasks().iter().enumerate() {
                if !ran(run.state) {
                    continue;
                }
                let task = &plan.setups[t].id;
                state.timeline.push(LiveSpan {
                    group: plan.id.clone(),
                    task: task.clone(),
                    started_ms: millis(run.started()),
                    finished_ms: self.settled_at(g, t).map(millis),
                });
                for (instance, failure) in &run.failures {
                    let at_ms = millis(failure.at);
                    let full = latest.len() == LATEST_FAILURES;
                    if full && latest.last().is_some_and(|last| last.at_ms >= at_ms) {
                        continue;
                    }
                    if full {
                        latest.pop();
                    }
                    let at = latest.partition_point(|kept| kept.at_ms >= at_ms);
                    latest.insert(
                        at,
                        LiveFailure {
                            group: plan.id.clone(),
                            task: task.clone(),
                            instance: *instance,
                            attempts: failure.attempts,
                            error: failure.failure.message.clone(),
                            at_ms,
                        },
                    );
                }
            }
        }
        state.failures = latest;
    }
}
