//! [`FieldSelectionLayer`]: configuration of the field selection middleware.

use std::sync::Arc;

use tower_layer::Layer;

use super::{FieldSelection, SelectionLimits};

/// Settings shared by the layer and its services.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) param: Arc<str>,
    pub(crate) max_body: usize,
    pub(crate) limits: SelectionLimits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            param: Arc::from("fields"),
            max_body: 4 * 1024 * 1024,
            limits: SelectionLimits::new(),
        }
    }
}

/// Applies [`FieldSelection`] to a service: prunes JSON responses to the
/// fields named in the request's `?fields=` query parameter.
///
/// See the [module docs](super) for the rules.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct FieldSelectionLayer {
    config: Config,
}

impl FieldSelectionLayer {
    /// A layer with the defaults: parameter `fields`, bodies up to 4 MiB,
    /// and the default [`SelectionLimits`] (2048 bytes, 16 levels, 256
    /// names).
    pub fn new() -> Self {
        Self::default()
    }

    /// The query parameter that holds the selection (default `fields`).
    pub fn param(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config.param = name.into();
        self
    }

    /// The largest body, in bytes, that is buffered to be pruned (default
    /// 4 MiB). Larger responses, and responses of unknown length, pass
    /// through unpruned.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.config.max_body = bytes;
        self
    }

    /// All bounds on the selection at once.
    pub fn limits(mut self, limits: SelectionLimits) -> Self {
        self.config.limits = limits;
        self
    }

    /// The longest selection, in bytes after percent-decoding (default
    /// 2048). See [`SelectionLimits::max_len`].
    pub fn max_selection_len(mut self, bytes: usize) -> Self {
        self.config.limits = self.config.limits.max_len(bytes);
        self
    }

    /// The deepest selected field (default 16, at most 128). See
    /// [`SelectionLimits::max_depth`].
    pub fn max_depth(mut self, levels: usize) -> Self {
        self.config.limits = self.config.limits.max_depth(levels);
        self
    }

    /// The most field names in a selection (default 256). See
    /// [`SelectionLimits::max_names`].
    pub fn max_names(mut self, names: usize) -> Self {
        self.config.limits = self.config.limits.max_names(names);
        self
    }
}

impl<S> Layer<S> for FieldSelectionLayer {
    type Service = FieldSelection<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FieldSelection::with_config(inner, self.config.clone())
    }
}
