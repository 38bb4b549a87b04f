//! The fan-out language of agency: how one task becomes many instances.
//!
//! A task's input may carry an `expansion_config` (or the task may carry one beside its input):
//!
//! - `array`: one instance per element of one array:
//!   `{"type": "array", "array_mapping": {"user": "users"}}`.
//! - `matrix`: the cross product of several arrays, row-major in the mapping's key order:
//!   `{"type": "matrix", "array_mapping": {"row": "rows", "col": "cols"}}` gives A1, A2, A3, B1, ...
//!   `zip: [["a", "b"]]` makes `a` and `b` advance together as one dimension.
//! - `zip`: every mapped array advances together (lengths must match).
//! - `custom`: `transform_rules` over a source object (`data` unless `source` says otherwise):
//!   `combine` (cross product of the named fields), `filter` (per-field predicates, applied before
//!   combining; a filtered field that is not combined is passed whole, filtered, to every
//!   instance), `field_mappings` (rename and project variables), `conditions` (predicates over
//!   the combined variables; a list of objects means any of them).
//! - `range`: one instance per number of a range, in the order written:
//!   `{"type": "range", "range": "1-5,10,12", "variable": "task_id"}`; `range` may also be a list
//!   of numbers or a `context.` path holding either.
//! - `include` (extra combinations, appended in order) and `exclude` (combinations removed,
//!   matched by partial object) for every type.
//!
//! Mapping paths point into the task input, or into the session context with a `context.` prefix.
//! Each instance's input is the task input without `expansion_config` and without the arrays the
//! expansion consumed, with templates rendered (see [`template`](crate) rules in
//! `docs/expansion.md`), plus one field per variable the input does not already have.
//!
//! The instance count is known at plan time, with overflow checks, and instances are produced
//! lazily and addressable by index:
//!
//! ```
//! use expansion::{Expansion, FieldPath, Limits, Task};
//! use serde_json::json;
//!
//! let input = json!({
//!     "rows": ["A", "B"],
//!     "cols": [1, 2, 3],
//!     "label": "{{row}}{{col}}",
//!     "expansion_config": {"type": "matrix", "array_mapping": {"row": "rows", "col": "cols"}}
//! });
//! let path = FieldPath::root().key("groups").index(0).key("tasks").index(0);
//! let task = Task { id: "grid", path: &path, input: &input, expansion_config: None, memo_key: None, upstream: &[] };
//! let expansion = Expansion::plan(task, &json!({}), &Limits::default())?;
//! assert_eq!(expansion.len(), 6);
//! let fifth = expansion.get(4).expect("six instances");
//! assert_eq!(expansion.render(&fifth)?, json!({"label": "B2", "row": "B", "col": 2}));
//! # Ok::<(), expansion::Error>(())
//! ```
//!
//! This crate does no IO; errors name the task and the field path they are about.
//!
//! # Layout
//! - `config`: `expansion_config` parsed strictly.
//! - `plan`: an expansion resolved against the task input and the context.
//! - `layout`: the built-in expansions' variables and dimensions, before the space is built.
//! - `expansion`: a planned expansion (count, variables, instances produced lazily).
//! - `space`: the combination space, row-major.
//! - `select`: `include`, `exclude` and `conditions`.
//! - `custom`: `transform_rules` (`combine`, `filter`, ...).
//! - `predicate`: the predicates of `filter` and `conditions`.
//! - `range`: number ranges kept as runs.
//! - `template`: `{{name}}` templates.
//! - `context`: the context as planning reads it.
//! - `output`: how instances' results become the task's value.
//! - `reference`: results kept by reference (`ResultsRef`).
//! - `path`: field paths for errors; `error`: the crate's error.

#![warn(missing_docs)]

mod config;
mod context;
mod custom;
mod error;
mod expansion;
mod layout;
mod output;
mod path;
mod plan;
mod predicate;
mod range;
mod reference;
mod select;
mod space;
mod template;

pub use config::ExpansionType;
pub use error::{Error, ErrorKind, Result};
pub use expansion::{Expansion, Instance, Instances, Limits};
pub use output::{CombineError, Combiner, OutputFormat, DISTINCT_LIMIT};
pub use path::{json_len, lookup, type_name, FieldPath};
pub use plan::Task;
pub use reference::{ResultsRef, RESULTS_KEY};
