//! The checks behind [`Session::validate`](super::Session::validate): settings, structure
//! (ids, dependencies, cycles, context keys) and every task's plan, each problem with its
//! field path.

use super::{Planned, Rules, MAX_LABEL_BYTES, MAX_METADATA_BYTES, SESSION_WRITER};
use crate::agent_spec::{AgentTask, AGENT_EXECUTOR};
use crate::error::Problem;
use crate::graph::{cycles, reaches};
use crate::inline::InlineResults;
use crate::memoize::Memoize;
use crate::planning::{plan_task, task_path, TaskPlan};
use crate::policy::{FailurePolicy, RetryPolicy};
use crate::spec::{session_id_problem, SessionSpec, TaskSpec, SESSION_KEY};
use expansion::{ErrorKind, FieldPath, Limits};
use serde_json::Value;
use std::collections::HashMap;

/// Group ids to their positions.
type Ids<'s> = HashMap<&'s str, usize>;
/// Task ids to their (group, task) positions.
type TaskIds<'s> = HashMap<&'s str, (usize, usize)>;

/// Dependency edges by index, from each node to what it depends on.
#[derive(Debug, Default)]
pub(super) struct Graph {
    pub(super) groups: Vec<Vec<usize>>,
    /// Per group, edges between its tasks: the whole task waited for.
    pub(super) tasks: Vec<Vec<Vec<usize>>>,
    /// Per group, instance-by-instance edges between its tasks.
    pub(super) each: Vec<Vec<Vec<usize>>>,
    /// Context key to the (group, task) that writes it.
    producers: HashMap<String, (usize, usize)>,
}

#[derive(Debug, Default)]
pub(super) struct Check {
    pub(super) problems: Vec<Problem>,
}

fn group_path(g: usize) -> FieldPath {
    FieldPath::root().key("groups").index(g)
}

impl Check {
    fn problem(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Executors, retry and failure policies, timeouts and concurrency.
    pub(super) fn settings(&mut self, spec: &SessionSpec, rules: &Rules) {
        if let Some(problem) = spec.session_id.as_deref().and_then(session_id_problem) {
            self.problem(&FieldPath::root().key("session_id"), problem);
        }
        if spec.timeout_ms == Some(0) {
            self.problem(
                &FieldPath::root().key("timeout_ms"),
                "timeout_ms must be positive",
            );
        }
        self.label(&FieldPath::root().key("description"), &spec.description);
        if let Some(metadata) = &spec.metadata {
            let size = serde_json::to_string(metadata).map_or(usize::MAX, |text| text.len());
            if size > MAX_METADATA_BYTES {
                self.problem(
                    &FieldPath::root().key("metadata"),
                    format!("metadata is {size} bytes as JSON, over the limit of {MAX_METADATA_BYTES} (it is written with every status update)"),
                );
            }
        }
        for (g, group) in spec.groups.iter().enumerate() {
            let at = group_path(g);
            self.label(&at.key("name"), &group.name);
            self.label(&at.key("description"), &group.description);
            if group.timeout_ms == Some(0) {
                self.problem(&at.key("timeout_ms"), "timeout_ms must be positive");
            }
            if let Some(Err(message)) = group.failure_policy.as_ref().map(FailurePolicy::parse) {
                self.problem(&at.key("failure_policy"), message);
            }
            for (t, task) in group.tasks.iter().enumerate() {
                self.task_settings(&task_path(g, t), task, rules);
            }
        }
    }

    /// A task's executor, policies, limits and agent.
    fn task_settings(&mut self, at: &FieldPath, task: &TaskSpec, rules: &Rules) {
        self.label(&at.key("name"), &task.name);
        self.label(&at.key("description"), &task.description);
        let by_agents = task.executor == AGENT_EXECUTOR;
        if let Some(known) = &rules.executors {
            if !task.executor.trim().is_empty() && !by_agents && !known.contains(&task.executor) {
                self.problem(
                    &at.key("executor"),
                    format!(
                        "unknown executor `{}` (known: {}, and `{AGENT_EXECUTOR}` for work agents claim)",
                        task.executor,
                        known.join(", ")
                    ),
                );
            }
        }
        if let Some(Err(problem)) = task.retry.as_ref().map(RetryPolicy::parse) {
            self.field_problem(&at.key("retry"), problem);
        }
        if task.timeout_ms == Some(0) {
            self.problem(&at.key("timeout_ms"), "timeout_ms must be positive");
        }
        if task.concurrency == Some(0) {
            self.problem(&at.key("concurrency"), "concurrency must be at least 1");
        }
        if let Some(Err(problem)) = task.memoize.as_ref().map(Memoize::parse) {
            self.field_problem(&at.key("memoize"), problem);
        }
        if let Some(Err(problem)) = task.inline_results.as_ref().map(InlineResults::parse) {
            self.field_problem(&at.key("inline_results"), problem);
        }
        match (&task.agent, by_agents) {
            (Some(agent), true) => {
                if let Err(problem) = AgentTask::parse(agent) {
                    self.field_problem(&at.key("agent"), problem);
                }
            }
            (None, true) => self.problem(
                &at.key("agent"),
                format!("a task with \"executor\": \"{AGENT_EXECUTOR}\" says which agents claim it: {{\"type\": \"<agent type>\", \"claim_timeout_ms\": N}}"),
            ),
            (Some(_), false) => self.problem(
                &at.key("agent"),
                format!("`agent` is for tasks with \"executor\": \"{AGENT_EXECUTOR}\", not `{}`", task.executor),
            ),
            (None, false) => {}
        }
    }

    /// A problem `(field below at, message)` of the value at `at`.
    fn field_problem(&mut self, at: &FieldPath, (field, message): (String, String)) {
        let path = if field.is_empty() {
            at.clone()
        } else {
            at.dotted(&field)
        };
        self.problem(&path, message);
    }

    /// A name or description: for people, so bounded.
    fn label(&mut self, at: &FieldPath, label: &Option<String>) {
        if let Some(text) = label {
            if text.len() > MAX_LABEL_BYTES {
                self.problem(
                    at,
                    format!("{} bytes, over the limit of {MAX_LABEL_BYTES}", text.len()),
                );
            }
        }
    }

    /// Ids, dependencies, cycles and context keys.
    pub(super) fn structure(&mut self, spec: &SessionSpec) -> Graph {
        let (group_ids, task_ids) = self.ids(spec);
        let mut graph = Graph::default();
        self.edges(spec, &group_ids, &task_ids, &mut graph);
        self.exit_handlers(spec, &graph);
        self.no_cycles(spec, &graph);
        self.context_keys(spec, &mut graph);
        graph
    }

    /// Group and task ids: present and unique (a group's by group, a task's in the session);
    /// each by its position.
    fn ids<'s>(&mut self, spec: &'s SessionSpec) -> (Ids<'s>, TaskIds<'s>) {
        if spec.groups.is_empty() {
            self.problem(
                &FieldPath::root().key("groups"),
                "a session needs at least one group",
            );
        }
        let mut group_ids: HashMap<&str, usize> = HashMap::new();
        let mut task_ids: HashMap<&str, (usize, usize)> = HashMap::new();
        for (g, group) in spec.groups.iter().enumerate() {
            let at = group_path(g).key("id");
            if group.id.is_empty() {
                self.problem(&at, "group id must not be empty");
            } else if let Some(first) = group_ids.insert(&group.id, g) {
                self.problem(
                    &at,
                    format!(
                        "duplicate group id `{}` (also {})",
                        group.id,
                        group_path(first)
                    ),
                );
                group_ids.insert(&group.id, first);
            }
            if group.tasks.is_empty() {
                self.problem(
                    &group_path(g).key("tasks"),
                    format!("group `{}` has no tasks", group.id),
                );
            }
            for (t, task) in group.tasks.iter().enumerate() {
                let at = task_path(g, t);
                if task.id.is_empty() {
                    self.problem(&at.key("id"), "task id must not be empty");
                } else if let Some(first) = task_ids.insert(&task.id, (g, t)) {
                    let message = format!(
                        "duplicate task id `{}` (also {}); task ids are unique in a session",
                        task.id,
                        task_path(first.0, first.1)
                    );
                    self.problem(&at.key("id"), message);
                    task_ids.insert(&task.id, first);
                }
                if task.executor.trim().is_empty() {
                    self.problem(&at.key("executor"), "executor must not be empty");
                }
            }
        }
        (group_ids, task_ids)
    }

    /// The dependency edges of groups, and of tasks in their group (whole, or instance by
    /// instance), each naming what it depends on.
    fn edges(
        &mut self,
        spec: &SessionSpec,
        group_ids: &Ids<'_>,
        task_ids: &TaskIds<'_>,
        graph: &mut Graph,
    ) {
        for (g, group) in spec.groups.iter().enumerate() {
            let mut edges = Vec::new();
            for (j, dep) in group.depends_on.iter().enumerate() {
                match group_ids.get(dep.as_str()) {
                    Some(&target) => edges.push(target),
                    None => self.problem(
                        &group_path(g).key("depends_on").index(j),
                        format!("unknown group `{dep}`"),
                    ),
                }
            }
            graph.groups.push(edges);
            let local: HashMap<&str, usize> = group
                .tasks
                .iter()
                .enumerate()
                .map(|(t, task)| (task.id.as_str(), t))
                .collect();
            let mut task_edges = Vec::new();
            let mut each_edges = Vec::new();
            for (t, task) in group.tasks.iter().enumerate() {
                let mut edges = Vec::new();
                let mut each = Vec::new();
                for (j, dep) in task.depends_on.iter().enumerate() {
                    let at = task_path(g, t).key("depends_on").index(j);
                    let dep = dep.task.as_str();
                    let each_dep = task.depends_on[j].each;
                    match (local.get(dep), task_ids.get(dep)) {
                        (Some(&target), _) if each_dep => each.push(target),
                        (Some(&target), _) => edges.push(target),
                        (None, Some(&(other, _))) => self.problem(
                            &at,
                            format!(
                                "task `{dep}` is in group `{}`; tasks depend on tasks of their own group, so make group `{}` depend on group `{}`",
                                spec.groups[other].id, group.id, spec.groups[other].id
                            ),
                        ),
                        (None, None) => self.problem(&at, format!("unknown task `{dep}`")),
                    }
                }
                task_edges.push(edges);
                each_edges.push(each);
            }
            graph.tasks.push(task_edges);
            graph.each.push(each_edges);
        }
    }

    /// Exit handlers depend on nothing, nothing depends on them, and the context key they read
    /// is the engine's.
    fn exit_handlers(&mut self, spec: &SessionSpec, graph: &Graph) {
        for (g, group) in spec.groups.iter().enumerate() {
            if group.on_exit && !group.depends_on.is_empty() {
                self.problem(
                    &group_path(g).key("depends_on"),
                    format!("group `{}` is an exit handler (on_exit): it runs after every other group has ended, so it takes no depends_on", group.id),
                );
            }
            for (j, &target) in graph.groups[g].iter().enumerate() {
                if spec.groups[target].on_exit && !group.on_exit {
                    self.problem(
                        &group_path(g).key("depends_on").index(j),
                        format!(
                            "group `{}` is an exit handler (on_exit), which runs after every other group; nothing can depend on it",
                            spec.groups[target].id
                        ),
                    );
                }
            }
        }
        if spec.context.contains_key(SESSION_KEY) {
            self.problem(
                &FieldPath::root().key("context").key(SESSION_KEY),
                format!("`{SESSION_KEY}` is the engine's: exit handlers read the session's status there"),
            );
        }
    }

    /// No dependency cycle between groups, nor between the tasks of a group.
    fn no_cycles(&mut self, spec: &SessionSpec, graph: &Graph) {
        for cycle in cycles(&graph.groups) {
            let names: Vec<&str> = cycle.iter().map(|&g| spec.groups[g].id.as_str()).collect();
            self.problem(
                &group_path(cycle[0]).key("depends_on"),
                format!("dependency cycle between groups: {}", names.join(" -> ")),
            );
        }
        for (g, edges) in graph.tasks.iter().enumerate() {
            // Waiting instance by instance is waiting too: a cycle through either kind is one.
            let edges: Vec<Vec<usize>> = edges
                .iter()
                .zip(&graph.each[g])
                .map(|(whole, each)| whole.iter().chain(each).copied().collect())
                .collect();
            for cycle in cycles(&edges) {
                let tasks = &spec.groups[g].tasks;
                let names: Vec<&str> = cycle.iter().map(|&t| tasks[t].id.as_str()).collect();
                self.problem(
                    &task_path(g, cycle[0]).key("depends_on"),
                    format!("dependency cycle between tasks: {}", names.join(" -> ")),
                );
            }
        }
    }

    /// Each context key is written by one task, and none is the engine's.
    fn context_keys(&mut self, spec: &SessionSpec, graph: &mut Graph) {
        for (g, group) in spec.groups.iter().enumerate() {
            for (t, task) in group.tasks.iter().enumerate() {
                let key = task.context_key();
                let field = if task.result_key.is_some() {
                    "result_key"
                } else {
                    "id"
                };
                if key == SESSION_KEY {
                    self.problem(
                        &task_path(g, t).key(field),
                        format!("context key `{SESSION_KEY}` is the engine's (exit handlers read the session's status there); set another result_key"),
                    );
                } else if let Some(&(pg, pt)) = graph.producers.get(key) {
                    let other = &spec.groups[pg].tasks[pt].id;
                    self.problem(
                        &task_path(g, t).key(field),
                        format!("context key `{key}` is also written by task `{other}`; set a distinct result_key"),
                    );
                } else {
                    graph.producers.insert(key.to_string(), (g, t));
                }
            }
        }
    }

    /// Plans every task's expansion against the initial context; a reference to a context key
    /// an upstream task writes is deferred, any other missing reference is a problem.
    pub(super) fn plans(
        &mut self,
        spec: &SessionSpec,
        graph: &Graph,
        limits: &Limits,
    ) -> Vec<Vec<(FieldPath, Planned)>> {
        let context = Value::Object(spec.context.clone());
        let mut plans = Vec::with_capacity(spec.groups.len());
        for (g, group) in spec.groups.iter().enumerate() {
            let mut group_plans = Vec::with_capacity(group.tasks.len());
            for (t, task) in group.tasks.iter().enumerate() {
                let path = task_path(g, t);
                let memoize = task.memoize.as_ref().and_then(|m| Memoize::parse(m).ok());
                let upstream = task.upstream();
                let planned = plan_task(
                    (g, t),
                    TaskPlan {
                        id: &task.id,
                        input: &task.input,
                        expansion_config: task.expansion_config.as_ref(),
                        memo_key: memoize.as_ref().map(|m| m.key.as_str()),
                        upstream: &upstream,
                    },
                    &context,
                    limits,
                );
                let plan = match planned {
                    Ok(expansion) => Planned::Ready(Box::new(expansion)),
                    Err(error) => match &error.kind {
                        ErrorKind::ContextMissing { key } => {
                            match self.producer(spec, graph, (g, t), key, &error.path) {
                                Some(producer) => Planned::Deferred {
                                    key: key.clone(),
                                    producer,
                                },
                                None => continue,
                            }
                        }
                        kind => {
                            self.problem(&error.path, format!("task `{}`: {kind}", task.id));
                            continue;
                        }
                    },
                };
                group_plans.push((path, plan));
            }
            self.instance_counts(g, group, &graph.each[g], &group_plans);
            plans.push(group_plans);
        }
        plans
    }

    /// An instance-by-instance dependency pairs instance `i` with instance `i`: both tasks need
    /// the same count. Checked here where both are known before running, and by the machine
    /// when a task is planned at run time.
    fn instance_counts(
        &mut self,
        g: usize,
        group: &crate::spec::GroupSpec,
        each: &[Vec<usize>],
        plans: &[(FieldPath, Planned)],
    ) {
        // A task whose planning failed has no entry; look plans up by path.
        let count = |t: usize| {
            let path = task_path(g, t);
            plans
                .iter()
                .find(|(at, _)| *at == path)
                .and_then(|(_, plan)| plan.instances())
        };
        for (t, upstream) in each.iter().enumerate() {
            for &u in upstream {
                let (Some(mine), Some(theirs)) = (count(t), count(u)) else {
                    continue;
                };
                if mine != theirs {
                    let j = group.tasks[t]
                        .depends_on
                        .iter()
                        .position(|d| d.each && d.task == group.tasks[u].id)
                        .unwrap_or(0);
                    self.problem(
                        &task_path(g, t).key("depends_on").index(j),
                        format!(
                            "task `{}` has {mine} instances and task `{}` {theirs}: depending instance by instance needs the same count",
                            group.tasks[t].id, group.tasks[u].id
                        ),
                    );
                }
            }
        }
    }

    /// The upstream task that writes `context.<key>` for task `(g, t)`, or a problem saying why
    /// there is none.
    fn producer(
        &mut self,
        spec: &SessionSpec,
        graph: &Graph,
        (g, t): (usize, usize),
        key: &str,
        at: &FieldPath,
    ) -> Option<String> {
        let head = key.split('.').next().unwrap_or(key);
        let task: &TaskSpec = &spec.groups[g].tasks[t];
        let exit_handler = spec.groups[g].on_exit;
        if head == SESSION_KEY {
            if exit_handler {
                return Some(SESSION_WRITER.to_string());
            }
            self.problem(
                at,
                format!("task `{}`: `context.{key}` is there only for exit handlers (groups with \"on_exit\": true)", task.id),
            );
            return None;
        }
        let Some(&(pg, pt)) = graph.producers.get(head) else {
            self.problem(
                at,
                format!("task `{}`: `context.{key}` is not in the session context and no task writes `{head}`", task.id),
            );
            return None;
        };
        let producer = &spec.groups[pg].tasks[pt];
        let upstream = if pg == g {
            reaches(&graph.tasks[g], t, pt)
        } else if exit_handler {
            // Every other group has ended before an exit handler starts.
            !spec.groups[pg].on_exit
        } else {
            reaches(&graph.groups, g, pg)
        };
        if upstream {
            return Some(producer.id.clone());
        }
        let fix = if pg == g && graph.each[g][t].contains(&pt) {
            format!("it is depended on instance by instance, and a task's context is written after all its instances: read `{{{{upstream.{}}}}}`, or depend on the whole task", producer.id)
        } else if pg == g {
            format!("make task `{}` depend on task `{}`", task.id, producer.id)
        } else if exit_handler {
            "exit handlers run side by side: put both tasks in one of them".to_string()
        } else {
            format!(
                "make group `{}` depend on group `{}`",
                spec.groups[g].id, spec.groups[pg].id
            )
        };
        self.problem(
            at,
            format!(
                "task `{}`: `context.{key}` is written by task `{}`, which does not run before it ({fix})",
                task.id, producer.id
            ),
        );
        None
    }
}
