//! Internal entry points for the workspace's fuzz targets (feature
//! `fuzzing`): the cardinality guard that request methods and route names
//! go through. Not part of the public API: no semver guarantee, hidden from
//! the docs, never enabled by default.

use http::Method;

use crate::cardinality;

/// A registry of at most `cap` names plus the overflow entry.
#[derive(Debug)]
pub struct Registry(cardinality::Registry<()>);

impl Registry {
    /// At most `cap` names (at least 1).
    pub fn new(cap: usize) -> Self {
        Self(cardinality::Registry::new(cap, cardinality::OVERFLOW))
    }

    /// The id of `name`, and the name registered under it.
    pub fn resolve(&self, name: &str) -> (u32, &str) {
        let id = self.0.resolve(name, |_| ());
        (id, &self.0.get(id).name)
    }

    /// The most names it holds.
    pub fn cap(&self) -> usize {
        self.0.cap()
    }

    /// Names registered (the overflow entry not counted).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no name is registered.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// Entries, overflow last when it exists.
    pub fn entries(&self) -> usize {
        self.0.entries().count()
    }
}

/// The method label of `method` with `extra` methods known besides the
/// standard ones, and the number of labels.
pub fn method_label(extra: &[Method], method: &Method) -> (String, usize) {
    let methods = cardinality::Methods::new(extra);
    let index = methods.index(method);
    (methods.label(index).to_owned(), methods.len())
}
