//! A planned expansion: its instance count, its variables, and instances produced lazily, in a
//! fixed order, addressable by index. Nothing here allocates per instance until `render`.

use crate::config::ExpansionType;
use crate::error::{Error, ErrorKind, Result};
use crate::output::OutputFormat;
use crate::path::{json_len, lookup_parts, FieldPath};
use crate::range::Numbers;
use crate::reference::ResultsRef;
use crate::space::Space;
use crate::template::{Scope, Template};
use serde_json::Value;
use std::borrow::Cow;
use std::ops::Range;

/// Bounds that keep a fan-out from exhausting memory or time; every one gives a clear error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Instances one task may expand to.
    pub max_instances: u64,
    /// Combinations scanned at plan time when `exclude` or `conditions` remove some (one bit each).
    pub max_combinations: u64,
    /// Bytes of one rendered instance input, as compact JSON.
    pub max_rendered_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_instances: 10_000_000,
            max_combinations: 100_000_000,
            max_rendered_bytes: 1 << 20,
        }
    }
}

/// One instance of an expansion: its index and where it comes from. Cheap to copy; its values are
/// read from the expansion on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    index: u64,
    point: Point,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Point {
    /// A combination of the cross product.
    Product(u64),
    /// Entry `i` of `include`.
    Include(usize),
}

impl Instance {
    /// The instance's index in the task, `0..len`.
    pub fn index(&self) -> u64 {
        self.index
    }
}

/// Where a variable's value comes from for the cross-product instances.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    pub source: Source,
    /// Fields below the source value (`field_mappings` may project `user.name`).
    pub fields: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum Source {
    Dim {
        dim: usize,
        column: usize,
    },
    Const(usize),
    /// The number at this dimension's coordinate in the expansion's range.
    Number {
        dim: usize,
    },
}

/// A task's expansion, planned: see the crate docs for the language.
#[derive(Debug, Clone)]
pub struct Expansion {
    pub(crate) task: String,
    pub(crate) kind: Option<ExpansionType>,
    pub(crate) output: OutputFormat,
    pub(crate) variables: Vec<String>,
    pub(crate) bindings: Vec<Binding>,
    pub(crate) consts: Vec<Value>,
    /// A range expansion's numbers, read by coordinate rather than stored as values.
    pub(crate) numbers: Option<Numbers>,
    pub(crate) space: Space,
    /// `include` entries, values aligned with `variables`.
    pub(crate) includes: Vec<Vec<Value>>,
    pub(crate) template: Template,
    /// Variables added to the instance input because the input has no field of that name.
    pub(crate) appended: Vec<usize>,
    pub(crate) len: u64,
    pub(crate) input_path: FieldPath,
    /// `Some(limit)` when an instance could exceed the limit and must be measured after rendering.
    pub(crate) check_size: Option<usize>,
    /// The top-level context keys planning read (see [`Expansion::context_keys`]).
    pub(crate) context_keys: Vec<String>,
    /// The memoization key's template, when the task memoizes.
    pub(crate) memo_key: Option<Template>,
    /// The results an `array` expansion maps over by reference (its one dimension, whose
    /// column holds only the window read, see [`Expansion::with_results`]).
    pub(crate) referenced: Option<ResultsRef>,
}

impl Expansion {
    /// The task this expansion belongs to.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The kind of fan-out, or `None` for a task without `expansion_config` (one instance).
    pub fn kind(&self) -> Option<ExpansionType> {
        self.kind
    }

    /// How the task's results are combined into the context.
    pub fn output_format(&self) -> OutputFormat {
        self.output
    }

    /// How many instances the task expands to, known without building any.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the task expands to no instance (only with `allow_empty`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The instance variables, in order: what templates may name besides `index` and `context.*`.
    pub fn variables(&self) -> &[String] {
        &self.variables
    }

    /// The results this expansion maps over by reference, if it does.
    pub fn referenced(&self) -> Option<&ResultsRef> {
        self.referenced.as_ref()
    }

    /// The positions of the referenced results the instances in `range` read (empty when the
    /// expansion maps over none).
    pub fn results_needed(&self, range: Range<u64>) -> Range<u64> {
        if self.referenced.is_none() {
            return 0..0;
        }
        let mapped = self.space.len();
        range.start.min(mapped)..range.end.min(mapped)
    }

    /// This expansion with the referenced results from position `start` on in hand: the
    /// instances reading them render; those reading others fail with
    /// [`ErrorKind::ResultNotRead`]. A worker makes one per range.
    pub fn with_results(&self, start: u64, results: Vec<Value>) -> Self {
        let mut windowed = self.clone();
        if windowed.referenced.is_some() {
            if let Some(dim) = windowed.space.dims.first_mut() {
                dim.offset = usize::try_from(start).unwrap_or(usize::MAX);
                dim.columns = vec![results];
            }
        }
        windowed
    }

    /// The `i`-th instance, if there is one.
    pub fn get(&self, i: u64) -> Option<Instance> {
        let selected = self.space.len();
        let point = if i < selected {
            Point::Product(self.space.nth(i)?)
        } else if i < self.len {
            Point::Include((i - selected) as usize)
        } else {
            return None;
        };
        Some(Instance { index: i, point })
    }

    /// Every instance, in order.
    pub fn iter(&self) -> Instances<'_> {
        self.range(0..self.len)
    }

    /// The instances with indices in `range` (clamped to the expansion), in order: how a worker
    /// walks the slice it was given.
    pub fn range(&self, range: Range<u64>) -> Instances<'_> {
        let end = range.end.min(self.len);
        let next = range.start.min(end);
        let cursor = if next < self.space.len() {
            self.space.nth(next).unwrap_or(u64::MAX)
        } else {
            u64::MAX
        };
        Instances {
            expansion: self,
            next,
            end,
            cursor,
        }
    }

    /// The value of variable `k` (see [`Expansion::variables`]) for `instance`: borrowed from
    /// the input or the context, or made on the spot for a range's number.
    pub fn value(&self, instance: &Instance, k: usize) -> Result<Cow<'_, Value>> {
        self.variable(instance.point, k).map_err(|kind| Error {
            task: self.task.clone(),
            path: self.input_path.clone(),
            instance: Some(instance.index),
            kind,
        })
    }

    pub(crate) fn variable(&self, point: Point, k: usize) -> Result<Cow<'_, Value>, ErrorKind> {
        let missing = || ErrorKind::UnknownVariable {
            name: format!("#{k}"),
            known: self.variables.clone(),
        };
        match point {
            Point::Include(entry) => self
                .includes
                .get(entry)
                .and_then(|values| values.get(k))
                .map(Cow::Borrowed)
                .ok_or_else(missing),
            Point::Product(combination) => {
                let binding = self.bindings.get(k).ok_or_else(missing)?;
                let base = match binding.source {
                    Source::Dim { dim, column } => self
                        .space
                        .value(combination, dim, column)
                        .ok_or_else(|| ErrorKind::ResultNotRead {
                            task: self
                                .referenced
                                .as_ref()
                                .map_or_else(String::new, |r| r.task.clone()),
                            position: self.space.coordinate(combination, dim) as u64,
                        })?,
                    Source::Const(i) => &self.consts[i],
                    Source::Number { dim } => {
                        let numbers = self.numbers.as_ref().ok_or_else(missing)?;
                        let position = self.space.coordinate(combination, dim) as u64;
                        return Ok(Cow::Owned(Value::from(numbers.nth(position))));
                    }
                };
                lookup_parts(base, binding.fields.iter().map(String::as_str))
                    .map(Cow::Borrowed)
                    .ok_or_else(|| ErrorKind::MissingVariableField {
                        name: self.variables[k].clone(),
                        field: binding.fields.join("."),
                    })
            }
        }
    }

    /// The instance's memoization key, when the task has one: its template rendered for the
    /// instance (a value that is not a string is written as JSON).
    pub fn memo_key(&self, instance: &Instance) -> Option<Result<String>> {
        let template = self.memo_key.as_ref()?;
        let scope = InstanceScope {
            expansion: self,
            instance: *instance,
            upstream: &[],
        };
        Some(
            template
                .render(&scope)
                .map(|key| match key {
                    Value::String(key) => key,
                    other => other.to_string(),
                })
                .map_err(|(path, kind)| Error {
                    task: self.task.clone(),
                    path,
                    instance: Some(instance.index),
                    kind,
                }),
        )
    }

    /// The instance's input: the task input with every placeholder filled in and the instance's
    /// variables added as fields the input does not already have.
    pub fn render(&self, instance: &Instance) -> Result<Value> {
        self.render_with(instance, &[])
    }

    /// As [`Expansion::render`], with `upstream[j]` the result of the same instance of the
    /// task's `j`-th upstream task ([`crate::Task::upstream`]), for `{{upstream.<task>}}`.
    pub fn render_with(&self, instance: &Instance, upstream: &[Value]) -> Result<Value> {
        let fail = |path: FieldPath, kind| Error {
            task: self.task.clone(),
            path,
            instance: Some(instance.index),
            kind,
        };
        let scope = InstanceScope {
            expansion: self,
            instance: *instance,
            upstream,
        };
        let mut rendered = self
            .template
            .render(&scope)
            .map_err(|(path, kind)| fail(path, kind))?;
        if let Value::Object(map) = &mut rendered {
            for &k in &self.appended {
                let value = self
                    .variable(instance.point, k)
                    .map_err(|kind| fail(self.input_path.clone(), kind))?;
                map.insert(self.variables[k].clone(), value.into_owned());
            }
        }
        if let Some(limit) = self.check_size {
            let size = json_len(&rendered);
            if size > limit {
                return Err(fail(
                    self.input_path.clone(),
                    ErrorKind::RenderedTooLarge { size, limit },
                ));
            }
        }
        Ok(rendered)
    }
}

struct InstanceScope<'a> {
    expansion: &'a Expansion,
    instance: Instance,
    upstream: &'a [Value],
}

impl Scope for InstanceScope<'_> {
    fn var(&self, k: usize) -> Result<Cow<'_, Value>, ErrorKind> {
        self.expansion.variable(self.instance.point, k)
    }

    fn index(&self) -> u64 {
        self.instance.index
    }

    fn upstream(&self, j: usize) -> Result<&Value, ErrorKind> {
        self.upstream.get(j).ok_or_else(|| {
            ErrorKind::Template(
                "an upstream result is read by the task's input only, not by its memoize.key"
                    .into(),
            )
        })
    }
}

/// Instances in order; see [`Expansion::iter`] and [`Expansion::range`].
#[derive(Debug, Clone)]
pub struct Instances<'a> {
    expansion: &'a Expansion,
    next: u64,
    end: u64,
    /// The next combination to look at when walking the selection.
    cursor: u64,
}

impl Iterator for Instances<'_> {
    type Item = Instance;

    fn next(&mut self) -> Option<Instance> {
        if self.next >= self.end {
            return None;
        }
        let space = &self.expansion.space;
        let selected = space.len();
        let point = if self.next < selected {
            let combination = space.next_from(self.cursor)?;
            self.cursor = combination + 1;
            Point::Product(combination)
        } else {
            Point::Include((self.next - selected) as usize)
        };
        let instance = Instance {
            index: self.next,
            point,
        };
        self.next += 1;
        Some(instance)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.end - self.next).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Instances<'_> {}
