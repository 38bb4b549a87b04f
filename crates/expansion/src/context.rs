//! The session context as planning reads it. Planning notes each top-level key it looks up, so a
//! planned [`Expansion`] can say which part of the context it depends on and a worker can be
//! handed that part alone ([`Expansion::context_subset`]) instead of the whole context.

use crate::expansion::Expansion;
use crate::path::lookup_parts;
use serde_json::{Map, Value};
use std::cell::RefCell;

/// A context being planned against, with the top-level keys read so far.
pub(crate) struct Context<'v> {
    value: &'v Value,
    read: RefCell<Vec<String>>,
}

impl<'v> Context<'v> {
    pub(crate) fn new(value: &'v Value) -> Self {
        Self {
            value,
            read: RefCell::new(Vec::new()),
        }
    }

    /// The value at `context.<dotted>`, noting its top-level key as read.
    pub(crate) fn lookup(&self, dotted: &str) -> Option<&'v Value> {
        self.lookup_parts(dotted.split('.'))
    }

    /// The value at the path `parts` below the context, noting its first part as read.
    pub(crate) fn lookup_parts<'p>(
        &self,
        parts: impl IntoIterator<Item = &'p str> + Clone,
    ) -> Option<&'v Value> {
        if let Some(head) = parts.clone().into_iter().next() {
            let mut read = self.read.borrow_mut();
            if !read.iter().any(|key| key == head) {
                read.push(head.to_string());
            }
        }
        lookup_parts(self.value, parts)
    }

    /// The top-level keys read, in the order first read.
    pub(crate) fn into_keys(self) -> Vec<String> {
        self.read.into_inner()
    }
}

impl Expansion {
    /// The top-level context keys this expansion was planned from. Planning again against a
    /// context that holds the same values under these keys gives the same expansion.
    pub fn context_keys(&self) -> &[String] {
        &self.context_keys
    }

    /// The part of `context` this expansion reads: its [`context_keys`](Self::context_keys) and
    /// nothing else, so what a worker is sent does not grow with unrelated context values.
    pub fn context_subset(&self, context: &Map<String, Value>) -> Map<String, Value> {
        self.context_keys
            .iter()
            .filter_map(|key| Some((key.clone(), context.get(key)?.clone())))
            .collect()
    }
}
