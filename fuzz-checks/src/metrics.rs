//! hasivu-metrics: the cardinality guard that request methods and route
//! names pass through.

use hasivu_metrics::{__fuzz::Registry, __fuzz::method_label, OTHER_METHOD, OVERFLOW};
use http::Method;

use crate::{Budget, text};

/// Each name is copied into the registry at most once and the index is
/// cloned per new name; the cap bounds both.
const LABELS: Budget = Budget::new(64, 64 * 1024);

/// The route registry and method labels. Input: a byte choosing the cap
/// (1–16), then names separated by `\n`, each also read as a method; the
/// first eight that are methods are the extra known methods.
///
/// Checks: the registry never holds more names than its cap, a name keeps
/// its id, names past the cap share the overflow entry; a method's label
/// is its own name or `_OTHER`, and there are at most 18 labels;
/// allocation linear.
pub fn metrics_labels(data: &[u8]) {
    let Some((&cap, rest)) = data.split_first() else {
        return;
    };
    let cap = usize::from(cap % 16) + 1;
    let input = text(rest);
    let names: Vec<&str> = input.split('\n').collect();
    let methods: Vec<Method> = names
        .iter()
        .filter_map(|n| Method::from_bytes(n.as_bytes()).ok())
        .collect();
    let extra = &methods[..methods.len().min(8)];

    let registry = Registry::new(cap);
    LABELS.run("labels", data.len(), || {
        for name in &names {
            let (id, registered) = registry.resolve(name);
            assert!(id as usize <= cap);
            if id as usize == cap {
                assert_eq!(registered, OVERFLOW);
            } else {
                assert_eq!(registered, *name);
            }
            assert_eq!(registry.resolve(name).0, id, "{name:?} changed its id");
            assert!(registry.len() <= registry.cap());
            assert!(registry.entries() <= cap + 1);
        }
        for method in &methods {
            let (label, labels) = method_label(extra, method);
            assert!(labels <= 18);
            assert!(label == method.as_str() || label == OTHER_METHOD, "{label}");
        }
    });
    assert_eq!(registry.cap(), cap);
}
