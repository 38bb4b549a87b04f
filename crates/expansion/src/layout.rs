//! The layouts of the built-in expansions: the variables, where each takes its values (a
//! dimension of the combination space or a constant), before the space is built. Array,
//! matrix and zip map input lists (`array_mapping`, grouped by `zip`), a range counts numbers;
//! custom's is in `custom.rs`.

use crate::config::{ExpansionType, RangeSource, Spec};
use crate::context::Context;
use crate::error::{ErrorKind, Result, Site};
use crate::expansion::{Binding, Source};
use crate::path::{lookup, type_name, FieldPath};
use crate::range::Numbers;
use crate::reference::ResultsRef;
use crate::space::Dimension;
use serde_json::Value;

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

/// Array, matrix and zip: variables come from `array_mapping`.
pub(crate) fn mapped_layout(
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
pub(crate) fn range_layout(
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
                return Err(site.unknown_variable(&at, name, variables));
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
