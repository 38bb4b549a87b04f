//! Planning: resolves an `expansion_config` against the task input and the session context into
//! an [`Expansion`]. Everything that can be checked before running is checked here, once.

use crate::config::{self, expect_object, ExpansionType, Spec};
use crate::context::Context;
use crate::error::{ErrorKind, Result, Site};
use crate::expansion::{Expansion, Limits};
use crate::layout::{mapped_layout, range_layout};
use crate::path::{json_len, remove, FieldPath};
use crate::select;
use crate::space::Space;
use crate::template::{Resolve, Slot, Template};
use serde_json::{Map, Value};
use std::cell::Cell;

/// What planning needs to know about a task.
#[derive(Debug, Clone, Copy)]
pub struct Task<'a> {
    /// The task's id, named in every error.
    pub id: &'a str,
    /// Where the task sits in its document, e.g. `groups[1].tasks[0]`.
    pub path: &'a FieldPath,
    /// The task input, holding the arrays mapped and the templates.
    pub input: &'a Value,
    /// A task-level `expansion_config`; seed-style configs inside `input` are found there.
    pub expansion_config: Option<&'a Value>,
    /// A memoization key, a template over the instance's variables, `index` and `context.*`
    /// (at `memoize.key` beside the input): see [`Expansion::memo_key`].
    pub memo_key: Option<&'a str>,
    /// Tasks whose result for the same instance this one's templates may read, as
    /// `{{upstream.<task>}}` (the runtime passes them to [`Expansion::render_with`]).
    pub upstream: &'a [String],
}

impl Expansion {
    /// Plans `task`'s expansion against `context`. A `context.` reference the context does not
    /// hold gives [`ErrorKind::ContextMissing`], which a caller may treat as "known at run time".
    pub fn plan(task: Task<'_>, context: &Value, limits: &Limits) -> Result<Self> {
        let context = Context::new(context);
        let mut expansion = Self::plan_reading(task, &context, limits)?;
        expansion.context_keys = context.into_keys();
        Ok(expansion)
    }

    fn plan_reading(task: Task<'_>, context: &Context<'_>, limits: &Limits) -> Result<Self> {
        let site = Site {
            task: task.id.to_string(),
        };
        let input_path = task.path.key("input");
        let (config, config_path) = config_of(task, &input_path, &site)?;
        let Some(config) = config else {
            let mut expansion = single_instance(task, &input_path, context, &site, limits)?;
            expansion.memo_key =
                memo_template(task, &Names::new(&[], task.upstream, context), &site)?;
            return Ok(expansion);
        };
        let spec = config::parse(config, &config_path, &site)?;
        expect_object(task.input, &input_path, &site)?;
        let mut layout = match spec.kind {
            ExpansionType::Custom => {
                crate::custom::custom_layout(&spec, task.input, context, &config_path, &site)?
            }
            ExpansionType::Range => range_layout(&spec, context, &config_path, &site)?,
            ExpansionType::Array | ExpansionType::Matrix | ExpansionType::Zip => {
                mapped_layout(&spec, task.input, context, &config_path, &site)?
            }
        };

        let mut base = task.input.clone();
        remove(&mut base, "expansion_config");
        for consumed in &layout.consumed {
            remove(&mut base, consumed);
        }

        let dims = std::mem::take(&mut layout.dims);
        let lengths: Vec<String> = dims.iter().map(|d| d.len.to_string()).collect();
        let space = Space::new(dims).ok_or_else(|| {
            site.error(
                &config_path,
                ErrorKind::Overflow(format!("{} combinations", lengths.join(" x "))),
            )
        })?;
        let includes = select::includes(&spec, &layout.variables, &config_path, &site)?;
        let rules_path = config_path.key("transform_rules").key("conditions");
        let conditions = match &spec.custom {
            Some(rules) => select::resolve_conditions(
                &rules.conditions,
                &layout.variables,
                &rules_path,
                &site,
            )?,
            None => Vec::new(),
        };
        check_exclude(&spec, &layout.variables, &config_path, &site)?;

        let mut expansion = Expansion {
            task: task.id.to_string(),
            kind: Some(spec.kind),
            output: spec.output,
            variables: layout.variables,
            bindings: layout.bindings,
            consts: layout.consts,
            numbers: layout.numbers.take(),
            space,
            includes,
            template: Template::Static(Value::Null),
            appended: Vec::new(),
            len: 0,
            input_path: input_path.clone(),
            check_size: None,
            context_keys: Vec::new(),
            memo_key: None,
            referenced: layout.referenced.take(),
        };
        if !spec.exclude.is_empty() || !conditions.is_empty() {
            let exclude = &spec.exclude;
            select_combinations(
                &mut expansion,
                exclude,
                &conditions,
                limits,
                &config_path,
                &site,
            )?;
        }
        expansion.count(&spec, &layout.dim_names, limits, &config_path, &site)?;

        let names = Names::new(&expansion.variables, task.upstream, context);
        expansion.template = Template::parse(&base, &input_path, &names)
            .map_err(|(path, kind)| site.error(&path, kind))?;
        expansion.memo_key = memo_template(task, &names, &site)?;
        expansion.appended = (0..expansion.variables.len())
            .filter(|&k| base.get(&expansion.variables[k]).is_none())
            .collect();
        expansion.check_size = size_check(&expansion, &base, &names, limits);
        Ok(expansion)
    }
}

/// Where the task's expansion config is, if it has one: on the task, or in its input (not
/// both).
fn config_of<'a>(
    task: Task<'a>,
    input_path: &FieldPath,
    site: &Site,
) -> Result<(Option<&'a Value>, FieldPath)> {
    let in_input = task
        .input
        .as_object()
        .and_then(|input| input.get("expansion_config"));
    Ok(match (task.expansion_config, in_input) {
        (Some(_), Some(_)) => {
            return Err(site.invalid(
                &task.path.key("expansion_config"),
                "expansion_config is given both on the task and in its input; keep one",
            ))
        }
        (Some(config), None) => (Some(config), task.path.key("expansion_config")),
        (None, Some(config)) => (Some(config), input_path.key("expansion_config")),
        (None, None) => (None, FieldPath::root()),
    })
}

/// Every key of an `exclude` entry is a variable.
fn check_exclude(
    spec: &Spec,
    variables: &[String],
    config_path: &FieldPath,
    site: &Site,
) -> Result<()> {
    for (i, entry) in spec.exclude.iter().enumerate() {
        if let Some(key) = entry.keys().find(|key| !variables.contains(key)) {
            return Err(site.unknown_variable(
                &config_path.key("exclude").index(i).key(key),
                key,
                variables,
            ));
        }
    }
    Ok(())
}

/// Drops the combinations `exclude` and `conditions` remove, testing at most
/// `max_combinations` of them.
fn select_combinations(
    expansion: &mut Expansion,
    exclude: &[Map<String, Value>],
    conditions: &[Vec<select::Condition>],
    limits: &Limits,
    config_path: &FieldPath,
    site: &Site,
) -> Result<()> {
    if let Some(reference) = &expansion.referenced {
        return Err(site.invalid(
            config_path,
            format!(
                "exclude and conditions cannot test the results of task `{}`: they are kept by reference, not in the context",
                reference.task
            ),
        ));
    }
    let raw = expansion.space.raw_len;
    if raw > limits.max_combinations {
        return Err(site.invalid(
            config_path,
            format!(
                "exclude and conditions must test {raw} combinations, over the limit of {}",
                limits.max_combinations
            ),
        ));
    }
    let selection = expansion
        .space
        .select(|combination| select::keep(expansion, combination, exclude, conditions))
        .map_err(|(path, message)| site.invalid(&path, message))?;
    expansion.space.apply(selection);
    Ok(())
}

impl Expansion {
    /// Counts the instances (the combinations selected and the includes), within the limits;
    /// none is an error unless `allow_empty`, saying which dimension is empty.
    fn count(
        &mut self,
        spec: &Spec,
        dim_names: &[String],
        limits: &Limits,
        config_path: &FieldPath,
        site: &Site,
    ) -> Result<()> {
        let selected = self.space.len();
        self.len = selected
            .checked_add(self.includes.len() as u64)
            .ok_or_else(|| site.error(config_path, ErrorKind::Overflow("include".into())))?;
        if self.len > limits.max_instances {
            return Err(site.error(
                config_path,
                ErrorKind::TooManyInstances {
                    count: self.len,
                    limit: limits.max_instances,
                },
            ));
        }
        if self.len == 0 && !spec.allow_empty {
            let why = match self.space.dims.iter().position(|d| d.len == 0) {
                Some(d) => format!("{} has no elements", dim_names[d]),
                None => "exclude and conditions removed every combination".to_string(),
            };
            return Err(site.error(config_path, ErrorKind::Empty(why)));
        }
        Ok(())
    }
}

/// The task's memoization key, parsed against the names its instances have.
fn memo_template(task: Task<'_>, names: &Names<'_>, site: &Site) -> Result<Option<Template>> {
    let Some(key) = task.memo_key else {
        return Ok(None);
    };
    let path = task.path.key("memoize").key("key");
    Template::parse(&Value::String(key.to_string()), &path, names)
        .map(Some)
        .map_err(|(path, kind)| site.error(&path, kind))
}

/// A task without `expansion_config` is one instance: its input with `{{context.*}}` and
/// `{{index}}` (0) filled in.
fn single_instance(
    task: Task<'_>,
    input_path: &FieldPath,
    context: &Context<'_>,
    site: &Site,
    limits: &Limits,
) -> Result<Expansion> {
    let input = task.input;
    let names = Names::new(&[], task.upstream, context);
    let template = Template::parse(input, input_path, &names)
        .map_err(|(path, kind)| site.error(&path, kind))?;
    let space = Space::new(Vec::new())
        .ok_or_else(|| site.invalid(input_path, "an empty product cannot overflow"))?;
    let mut expansion = Expansion {
        task: site.task.clone(),
        kind: None,
        output: Default::default(),
        variables: Vec::new(),
        bindings: Vec::new(),
        consts: Vec::new(),
        numbers: None,
        space,
        includes: Vec::new(),
        template,
        appended: Vec::new(),
        len: 1,
        input_path: input_path.clone(),
        check_size: None,
        context_keys: Vec::new(),
        memo_key: None,
        referenced: None,
    };
    expansion.check_size = size_check(&expansion, input, &names, limits);
    Ok(expansion)
}

/// Resolves template names: the expansion's variables, `index`, `context.*` and
/// `upstream.<task>`.
struct Names<'a> {
    variables: &'a [String],
    upstream: &'a [String],
    context: &'a Context<'a>,
    max_literal: Cell<usize>,
    /// A template reads an upstream result, whose size is known only when rendering.
    reads_upstream: Cell<bool>,
}

impl<'a> Names<'a> {
    fn new(variables: &'a [String], upstream: &'a [String], context: &'a Context<'a>) -> Self {
        Self {
            variables,
            upstream,
            context,
            max_literal: Cell::new(0),
            reads_upstream: Cell::new(false),
        }
    }
}

impl Resolve for Names<'_> {
    fn resolve(&self, head: &str, rest: &[&str]) -> Result<(Slot, usize), ErrorKind> {
        if let Some(k) = self.variables.iter().position(|v| v == head) {
            return Ok((Slot::Var(k), 0));
        }
        match head {
            "index" if rest.is_empty() => Ok((Slot::Index, 0)),
            "index" => Err(ErrorKind::Template(
                "`index` is a number and has no fields".into(),
            )),
            "context" => {
                let value = self
                    .context
                    .lookup_parts(rest.iter().copied())
                    .ok_or_else(|| ErrorKind::ContextMissing {
                        key: rest.join("."),
                    })?;
                self.max_literal
                    .set(self.max_literal.get().max(json_len(value)));
                Ok((Slot::Literal(value.clone()), rest.len()))
            }
            "upstream" => {
                let named = rest.first().copied().unwrap_or_default();
                match self.upstream.iter().position(|u| u == named) {
                    Some(j) => {
                        self.reads_upstream.set(true);
                        Ok((Slot::Upstream(j), 1))
                    }
                    None if self.upstream.is_empty() => Err(ErrorKind::Template(format!(
                        "`upstream.{named}`: this task depends on no task instance by instance; add {{\"task\": \"{named}\", \"each\": true}} to its depends_on"
                    ))),
                    None => {
                        let known: Vec<String> =
                            self.upstream.iter().map(|t| format!("`upstream.{t}`")).collect();
                        Err(ErrorKind::Template(format!(
                            "`upstream.{named}`: this task depends instance by instance only on {}",
                            known.join(", ")
                        )))
                    }
                }
            }
            _ => {
                let mut known = self.variables.to_vec();
                known.extend(["index".to_string(), "context.<key>".to_string()]);
                known.extend(self.upstream.iter().map(|t| format!("upstream.{t}")));
                Err(ErrorKind::UnknownVariable {
                    name: head.to_string(),
                    known,
                })
            }
        }
    }
}

/// Bounds the rendered size of any instance; returns the limit to check per instance only when
/// the bound exceeds it, so the common case costs nothing while rendering.
fn size_check(
    expansion: &Expansion,
    base: &Value,
    names: &Names<'_>,
    limits: &Limits,
) -> Option<usize> {
    if names.reads_upstream.get() {
        return Some(limits.max_rendered_bytes);
    }
    let mut largest = names.max_literal.get().max(20);
    for dim in &expansion.space.dims {
        for column in &dim.columns {
            largest = largest.max(column.iter().map(json_len).max().unwrap_or(0));
        }
    }
    for value in expansion
        .consts
        .iter()
        .chain(expansion.includes.iter().flatten())
    {
        largest = largest.max(json_len(value));
    }
    let slots = expansion.template.placeholder_count() + expansion.appended.len();
    let names: usize = expansion
        .appended
        .iter()
        .map(|&k| expansion.variables[k].len() + 4)
        .sum();
    let bound = json_len(base)
        .saturating_add(slots.saturating_mul(largest))
        .saturating_add(names);
    (bound > limits.max_rendered_bytes).then_some(limits.max_rendered_bytes)
}
