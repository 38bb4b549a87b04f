//! Planning: resolves an `expansion_config` against the task input and the session context into
//! an [`Expansion`]. Everything that can be checked before running is checked here, once.

use crate::config::{self, expect_object, ExpansionType, RangeSource, Spec};
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result, Site};
use crate::expansion::{Binding, Expansion, Limits, Source};
use crate::path::{json_len, lookup, remove, type_name, FieldPath};
use crate::range::Numbers;
use crate::reference::ResultsRef;
use crate::select;
use crate::space::{Dimension, Space};
use crate::template::{Resolve, Slot, Template};
use serde_json::Value;
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

/// The variables and where their values come from, before the space is built.
pub(crate) struct Layout {
    pub variables: Vec<String>,
    pub bindings: Vec<Binding>,
    pub consts: Vec<Value>,
    pub dims: Vec<Dimension>,
    /// Per dimension, what to call it when it turns out empty.
    pub dim_names: Vec<String>,
    /// Input paths whose arrays the expansion consumed; they are not repeated in every instance.
    pub consumed: Vec<String>,
    /// A range expansion's numbers.
    pub numbers: Option<Numbers>,
    /// The results an `array` expansion maps over by reference.
    pub referenced: Option<ResultsRef>,
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
        let in_input = task
            .input
            .as_object()
            .and_then(|input| input.get("expansion_config"));
        let (config, config_path) = match (task.expansion_config, in_input) {
            (Some(_), Some(_)) => {
                return Err(site.invalid(
                    &task.path.key("expansion_config"),
                    "expansion_config is given both on the task and in its input; keep one",
                ))
            }
            (Some(config), None) => (Some(config), task.path.key("expansion_config")),
            (None, Some(config)) => (Some(config), input_path.key("expansion_config")),
            (None, None) => (None, FieldPath::root()),
        };
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
        for (i, entry) in spec.exclude.iter().enumerate() {
            if let Some(key) = entry.keys().find(|key| !layout.variables.contains(key)) {
                return Err(unknown_variable(
                    &site,
                    &config_path.key("exclude").index(i).key(key),
                    key,
                    &layout.variables,
                ));
            }
        }

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
            if let Some(reference) = &expansion.referenced {
                return Err(site.invalid(
                    &config_path,
                    format!(
                        "exclude and conditions cannot test the results of task `{}`: they are kept by reference, not in the context",
                        reference.task
                    ),
                ));
            }
            let raw = expansion.space.raw_len;
            if raw > limits.max_combinations {
                return Err(site.invalid(
                    &config_path,
                    format!(
                        "exclude and conditions must test {raw} combinations, over the limit of {}",
                        limits.max_combinations
                    ),
                ));
            }
            let selection = expansion
                .space
                .select(|combination| {
                    select::keep(&expansion, combination, &spec.exclude, &conditions)
                })
                .map_err(|(path, message)| site.invalid(&path, message))?;
            expansion.space.apply(selection);
        }
        let selected = expansion.space.len();
        expansion.len = selected
            .checked_add(expansion.includes.len() as u64)
            .ok_or_else(|| site.error(&config_path, ErrorKind::Overflow("include".into())))?;
        if expansion.len > limits.max_instances {
            return Err(site.error(
                &config_path,
                ErrorKind::TooManyInstances {
                    count: expansion.len,
                    limit: limits.max_instances,
                },
            ));
        }
        if expansion.len == 0 && !spec.allow_empty {
            let why = match expansion.space.dims.iter().position(|d| d.len == 0) {
                Some(d) => format!("{} has no elements", layout.dim_names[d]),
                None => "exclude and conditions removed every combination".to_string(),
            };
            return Err(site.error(&config_path, ErrorKind::Empty(why)));
        }

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

/// Array, matrix and zip: variables come from `array_mapping`.
fn mapped_layout(
    spec: &Spec,
    input: &Value,
    context: &Context<'_>,
    config_path: &FieldPath,
    site: &Site,
) -> Result<Layout> {
    let mapping_path = config_path.key("array_mapping");
    let mut columns = Vec::with_capacity(spec.mapping.len());
    let mut consumed = Vec::new();
    for (var, source) in &spec.mapping {
        let at = mapping_path.key(var);
        if source.starts_with("context.") {
            let value = resolve(source, input, context, &at, site)?;
            if let Some(reference) = ResultsRef::from_value(value) {
                return referenced_layout(spec, var, source, reference, &at, site);
            }
        }
        let items = resolve_array(source, input, context, &at, site)?;
        columns.push(items.clone());
        if !source.starts_with("context.") {
            consumed.push(source.clone());
        }
    }
    let variables: Vec<String> = spec.mapping.iter().map(|(var, _)| var.clone()).collect();
    let groups = if spec.kind == ExpansionType::Zip {
        vec![(0..variables.len()).collect()]
    } else {
        zip_groups(&spec.zip, &variables, &config_path.key("zip"), site)?
    };
    let mut layout = Layout {
        variables,
        bindings: Vec::new(),
        consts: Vec::new(),
        dims: Vec::new(),
        dim_names: Vec::new(),
        consumed,
        numbers: None,
        referenced: None,
    };
    let mut bindings = vec![None; layout.variables.len()];
    for (d, group) in groups.iter().enumerate() {
        let dim = zipped(
            group,
            &columns,
            &layout.variables,
            &config_path.key("zip"),
            site,
        )?;
        for (column, &var) in group.iter().enumerate() {
            bindings[var] = Some(Binding {
                source: Source::Dim { dim: d, column },
                fields: Vec::new(),
            });
        }
        layout
            .dim_names
            .push(describe(group, &layout.variables, &spec.mapping));
        layout.dims.push(dim);
    }
    layout.bindings = bindings.into_iter().flatten().collect();
    Ok(layout)
}

/// An `array` over results kept by reference: one variable, one dimension of `count`, its
/// values read by each worker for its range.
fn referenced_layout(
    spec: &Spec,
    var: &str,
    source: &str,
    reference: ResultsRef,
    at: &FieldPath,
    site: &Site,
) -> Result<Layout> {
    if spec.kind != ExpansionType::Array || spec.mapping.len() != 1 {
        return Err(site.invalid(
            at,
            format!(
                "`{source}` holds the {} results of task `{}` by reference (over its `inline_results` limit): only an `array` expansion of one variable maps over them; raise the task's `inline_results` to have them in the context",
                reference.count, reference.task
            ),
        ));
    }
    let len = usize::try_from(reference.count).map_err(|_| {
        site.error(
            at,
            ErrorKind::Overflow(format!("{} results", reference.count)),
        )
    })?;
    Ok(Layout {
        variables: vec![var.to_string()],
        bindings: vec![Binding {
            source: Source::Dim { dim: 0, column: 0 },
            fields: Vec::new(),
        }],
        consts: Vec::new(),
        dims: vec![Dimension {
            columns: vec![Vec::new()],
            len,
            offset: 0,
        }],
        dim_names: vec![format!("`{source}`")],
        consumed: Vec::new(),
        numbers: None,
        referenced: Some(reference),
    })
}

/// Range: one variable, one dimension, its values the range's numbers (never stored as values).
fn range_layout(
    spec: &Spec,
    context: &Context<'_>,
    config_path: &FieldPath,
    site: &Site,
) -> Result<Layout> {
    let Some(range) = &spec.range else {
        return Err(site.error(config_path, ErrorKind::MissingField("range")));
    };
    let at = config_path.key("range");
    let numbers = match &range.source {
        RangeSource::Text(text) => Numbers::parse(text),
        RangeSource::List(items) => Numbers::from_list(items),
        RangeSource::Context(key) => match context.lookup(key) {
            None => {
                return Err(site.error(&at, ErrorKind::ContextMissing { key: key.clone() }));
            }
            Some(Value::String(text)) => Numbers::parse(text),
            Some(Value::Array(items)) => Numbers::from_list(items),
            Some(other) => Err(format!(
                "must be a range string or a list of numbers, found {}",
                type_name(other)
            )),
        }
        .map_err(|message| format!("`context.{key}`: {message}")),
    }
    .map_err(|message| site.invalid(&at, message))?;
    let len = usize::try_from(numbers.len()).map_err(|_| {
        site.error(
            &at,
            ErrorKind::Overflow(format!("{} numbers", numbers.len())),
        )
    })?;
    Ok(Layout {
        variables: vec![range.variable.clone()],
        bindings: vec![Binding {
            source: Source::Number { dim: 0 },
            fields: Vec::new(),
        }],
        consts: Vec::new(),
        dims: vec![Dimension {
            columns: Vec::new(),
            len,
            offset: 0,
        }],
        dim_names: vec!["the range".to_string()],
        consumed: Vec::new(),
        numbers: Some(numbers),
        referenced: None,
    })
}

fn describe(group: &[usize], variables: &[String], mapping: &[(String, String)]) -> String {
    let names: Vec<String> = group
        .iter()
        .map(|&v| match mapping.get(v) {
            Some((_, source)) => format!("`{source}`"),
            None => format!("`{}`", variables[v]),
        })
        .collect();
    names.join(" and ")
}

/// Groups variable positions into dimensions: each zip group is one, every other variable is its
/// own; dimensions are ordered by their first variable's position.
pub(crate) fn zip_groups(
    zip: &[Vec<String>],
    variables: &[String],
    zip_path: &FieldPath,
    site: &Site,
) -> Result<Vec<Vec<usize>>> {
    let mut group_of: Vec<Option<usize>> = vec![None; variables.len()];
    for (g, names) in zip.iter().enumerate() {
        for (i, name) in names.iter().enumerate() {
            let at = zip_path.index(g).index(i);
            let Some(var) = variables.iter().position(|v| v == name) else {
                return Err(unknown_variable(site, &at, name, variables));
            };
            if group_of[var].is_some() {
                return Err(site.invalid(&at, format!("`{name}` is in more than one zip group")));
            }
            group_of[var] = Some(g);
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut placed: Vec<Option<usize>> = vec![None; zip.len()];
    for (var, group) in group_of.iter().enumerate() {
        match *group {
            None => groups.push(vec![var]),
            Some(g) => match placed[g] {
                Some(at) => groups[at].push(var),
                None => {
                    placed[g] = Some(groups.len());
                    groups.push(vec![var]);
                }
            },
        }
    }
    Ok(groups)
}

/// One dimension from the columns of `group`, which must have equal lengths.
pub(crate) fn zipped(
    group: &[usize],
    columns: &[Vec<Value>],
    names: &[String],
    zip_path: &FieldPath,
    site: &Site,
) -> Result<Dimension> {
    let first = group.first().map_or(0, |&v| columns[v].len());
    if let Some(&other) = group.iter().find(|&&v| columns[v].len() != first) {
        return Err(site.invalid(
            zip_path,
            format!(
                "zipped arrays differ in length: `{}` has {first} elements, `{}` has {}",
                names[group[0]],
                names[other],
                columns[other].len()
            ),
        ));
    }
    Ok(Dimension {
        columns: group.iter().map(|&v| columns[v].clone()).collect(),
        len: first,
        offset: 0,
    })
}

pub(crate) fn resolve<'v>(
    source: &str,
    input: &'v Value,
    context: &Context<'v>,
    at: &FieldPath,
    site: &Site,
) -> Result<&'v Value> {
    match source.strip_prefix("context.") {
        Some(key) => context.lookup(key).ok_or_else(|| {
            site.error(
                at,
                ErrorKind::ContextMissing {
                    key: key.to_string(),
                },
            )
        }),
        None => lookup(input, source).ok_or_else(|| {
            site.error(
                at,
                ErrorKind::NotInInput {
                    path: source.to_string(),
                },
            )
        }),
    }
}

fn resolve_array<'v>(
    source: &str,
    input: &'v Value,
    context: &Context<'v>,
    at: &FieldPath,
    site: &Site,
) -> Result<&'v Vec<Value>> {
    let value = resolve(source, input, context, at, site)?;
    value.as_array().ok_or_else(|| {
        site.invalid(
            at,
            format!(
                "`{source}` must be an array, found {}",
                crate::path::type_name(value)
            ),
        )
    })
}

pub(crate) fn unknown_variable(
    site: &Site,
    at: &FieldPath,
    name: &str,
    variables: &[String],
) -> Error {
    site.error(
        at,
        ErrorKind::UnknownVariable {
            name: name.to_string(),
            known: variables.to_vec(),
        },
    )
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
