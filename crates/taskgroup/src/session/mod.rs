//! Validation: a session is checked completely before anything runs, and every problem is
//! reported at once with its field path. A [`Session`] exists only once it is known good.

mod check;

use crate::agent_spec::AgentTask;
use crate::error::{Error, Result};
use crate::inline::InlineResults;
use crate::memoize::Memoize;
use crate::policy::{FailurePolicy, RetryPolicy};
use crate::spec::SessionSpec;
use check::Check;
use expansion::{Expansion, FieldPath, Limits};
use std::time::Duration;

/// The longest `name` or `description` accepted, in bytes.
pub const MAX_LABEL_BYTES: usize = 4096;
/// The largest `metadata` accepted, in bytes of compact JSON.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// Who [`Planned::Deferred`] names as writing `context._session`: the engine, not a task.
pub const SESSION_WRITER: &str = "(the engine, for exit handlers)";

/// What a session is validated against.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Bounds on instance counts and sizes, checked at every expansion.
    pub limits: Limits,
    /// The executors that can run tasks; `None` accepts any name (planning without a registry).
    pub executors: Option<Vec<String>>,
}

/// A validated session: its spec and, per group and task, what running it needs.
#[derive(Debug, Clone)]
pub struct Session {
    /// The document as parsed.
    pub spec: SessionSpec,
    /// `groups[g]` belongs to `spec.groups[g]`.
    pub groups: Vec<PlannedGroup>,
    /// `tasks[g][t]` is the plan of `spec.groups[g].tasks[t]`.
    pub tasks: Vec<Vec<PlannedTask>>,
    /// The whole session's deadline (`timeout_ms`).
    pub timeout: Option<Duration>,
}

/// What running a group needs, from validation.
#[derive(Debug, Clone)]
pub struct PlannedGroup {
    /// Indices of the groups this one waits for.
    pub depends_on: Vec<usize>,
    /// How failures of its instances decide its end.
    pub failure_policy: FailurePolicy,
    /// Its deadline from its start (`timeout_ms`).
    pub timeout: Option<Duration>,
}

/// What running a task needs, from validation.
#[derive(Debug, Clone)]
pub struct PlannedTask {
    /// Where it sits in the document, `groups[g].tasks[t]`.
    pub path: FieldPath,
    /// Its expansion, or what it waits for.
    pub plan: Planned,
    /// Indices (in the group) of the tasks this one waits for.
    pub depends_on: Vec<usize>,
    /// Indices (in the group) of the tasks it depends on instance by instance.
    pub each: Vec<usize>,
    /// When its failed instances are tried again.
    pub retry: RetryPolicy,
    /// The deadline of each attempt (`timeout_ms`).
    pub timeout: Option<Duration>,
    /// How its instances are memoized, if they are.
    pub memoize: Option<Memoize>,
    /// The agents that claim its instances, for `"executor": "agent"`.
    pub agent: Option<AgentTask>,
    /// How many of its results (`separate`) stay in the context.
    pub inline: InlineResults,
}

/// A task's expansion as far as it can be known before running.
#[derive(Debug, Clone)]
pub enum Planned {
    /// Planned against the initial context.
    Ready(Box<Expansion>),
    /// The expansion reads `context.<key>`, which an upstream task writes; it is planned when
    /// that result exists.
    Deferred {
        /// The `context.` path it reads.
        key: String,
        /// The id of the task that writes it.
        producer: String,
    },
}

impl Planned {
    /// The instance count, when it is known before running.
    pub fn instances(&self) -> Option<u64> {
        match self {
            Planned::Ready(expansion) => Some(expansion.len()),
            Planned::Deferred { .. } => None,
        }
    }
}

impl Session {
    /// Parses and validates a session document.
    pub fn from_json(text: &str, rules: &Rules) -> Result<Self> {
        let misfits = match SessionSpec::parse(text) {
            Ok(spec) => return Self::validate(spec, rules),
            Err(misfits) => misfits,
        };
        // Fields the format does not have change nothing else: the rest is checked too, so
        // every problem is told at once.
        let more =
            match crate::misfit::known_fields_only(text).map(|spec| Self::validate(spec, rules)) {
                Some(Err(Error::Invalid(more))) => more,
                _ => return Err(misfits),
            };
        Err(Error::Invalid(
            misfits.into_problems().into_iter().chain(more).collect(),
        ))
    }

    /// Checks everything that can be checked before running; one error lists every problem.
    pub fn validate(spec: SessionSpec, rules: &Rules) -> Result<Self> {
        let mut check = Check::default();
        let graph = check.structure(&spec);
        check.settings(&spec, rules);
        let plans = check.plans(&spec, &graph, &rules.limits);
        if !check.problems.is_empty() {
            return Err(Error::Invalid(check.problems));
        }
        let groups = spec
            .groups
            .iter()
            .zip(&graph.groups)
            .map(|(group, depends_on)| PlannedGroup {
                depends_on: depends_on.clone(),
                failure_policy: group
                    .failure_policy
                    .as_ref()
                    .and_then(|p| FailurePolicy::parse(p).ok())
                    .unwrap_or_default(),
                timeout: group.timeout_ms.map(Duration::from_millis),
            })
            .collect();
        let tasks = plans
            .into_iter()
            .enumerate()
            .map(|(g, plans)| {
                plans
                    .into_iter()
                    .enumerate()
                    .map(|(t, (path, plan))| {
                        let task = &spec.groups[g].tasks[t];
                        PlannedTask {
                            path,
                            plan,
                            depends_on: graph.tasks[g][t].clone(),
                            each: graph.each[g][t].clone(),
                            retry: task
                                .retry
                                .as_ref()
                                .and_then(|r| RetryPolicy::parse(r).ok())
                                .unwrap_or_default(),
                            timeout: task.timeout_ms.map(Duration::from_millis),
                            memoize: task.memoize.as_ref().and_then(|m| Memoize::parse(m).ok()),
                            agent: task.agent.as_ref().and_then(|a| AgentTask::parse(a).ok()),
                            inline: task
                                .inline_results
                                .as_ref()
                                .and_then(|i| InlineResults::parse(i).ok())
                                .unwrap_or_default(),
                        }
                    })
                    .collect()
            })
            .collect();
        let timeout = spec.timeout_ms.map(Duration::from_millis);
        Ok(Self {
            spec,
            groups,
            tasks,
            timeout,
        })
    }

    /// Instances known before running, and how many tasks are deferred until their context exists.
    pub fn total_instances(&self) -> (u64, usize) {
        let plans = self.tasks.iter().flatten();
        let known = plans
            .clone()
            .filter_map(|task| task.plan.instances())
            .fold(0u64, u64::saturating_add);
        let deferred = plans.filter(|task| task.plan.instances().is_none()).count();
        (known, deferred)
    }

    /// Task `(g, t)`'s expansion as validation planned it, when running cannot change it: it
    /// reads no context key that a task of the session writes. `None` means plan it at run time
    /// against the context as it is then.
    pub fn settled_plan(&self, g: usize, t: usize) -> Option<&Expansion> {
        let Planned::Ready(expansion) = &self.tasks.get(g)?.get(t)?.plan else {
            return None;
        };
        let written = self.spec.groups.iter().flat_map(|group| &group.tasks);
        let changes = expansion
            .context_keys()
            .iter()
            .any(|key| written.clone().any(|task| task.context_key() == key));
        (!changes).then_some(expansion.as_ref())
    }
}
