//! The cardinality guard: a bounded registry of names and method labels.
//!
//! No tower, no I/O. [`Registry`] hands out a stable small id per distinct
//! name up to a cap, and the overflow id past it; lookups of known names
//! read an immutable map (no lock, no allocation for a borrowed `&str`), and
//! lookups past the cap do not lock either. [`Methods`] folds request
//! methods into a fixed set of labels with `_OTHER` for the rest, as the
//! OpenTelemetry HTTP conventions ask.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use arc_swap::ArcSwap;
use http::Method;

/// The route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";
/// The route label of routes past the cap.
pub const OVERFLOW: &str = "_overflow";
/// The method label of methods outside the known set.
pub const OTHER_METHOD: &str = "_OTHER";

type Index = HashMap<Box<str>, u32, foldhash::fast::RandomState>;

/// A registered name and its value.
#[derive(Debug)]
pub(crate) struct Entry<T> {
    pub(crate) name: Arc<str>,
    pub(crate) value: T,
}

/// Up to `cap` named entries plus one overflow entry, each created once.
pub(crate) struct Registry<T> {
    index: ArcSwap<Index>,
    // `cap` named slots, then the overflow slot. Slots never move, so an id
    // stays valid for the registry's life.
    slots: Box<[OnceLock<Entry<T>>]>,
    len: AtomicUsize,
    write: Mutex<()>,
    overflowed: AtomicU64,
    overflow_name: &'static str,
}

impl<T> std::fmt::Debug for Registry<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("len", &self.len())
            .field("cap", &self.cap())
            .field("overflowed", &self.overflowed())
            .finish()
    }
}

impl<T> Registry<T> {
    /// A registry of at most `cap` names (at least 1); names past it share
    /// the entry called `overflow_name`.
    pub(crate) fn new(cap: usize, overflow_name: &'static str) -> Self {
        let cap = cap.max(1);
        Self {
            index: ArcSwap::from_pointee(Index::default()),
            slots: (0..=cap).map(|_| OnceLock::new()).collect(),
            len: AtomicUsize::new(0),
            write: Mutex::new(()),
            overflowed: AtomicU64::new(0),
            overflow_name,
        }
    }

    /// The most names the registry holds.
    pub(crate) fn cap(&self) -> usize {
        self.slots.len() - 1
    }

    /// Names registered so far (the overflow entry not counted).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Lookups that went to the overflow entry.
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// The id of `name`, registering it with `make` when new, or the
    /// overflow id when the registry is full.
    #[inline]
    pub(crate) fn resolve(&self, name: &str, make: impl FnOnce(&Arc<str>) -> T) -> u32 {
        if let Some(&id) = self.index.load().get(name) {
            return id;
        }
        self.register(name, make)
    }

    #[cold]
    fn register(&self, name: &str, make: impl FnOnce(&Arc<str>) -> T) -> u32 {
        if self.len() >= self.cap() {
            return self.overflow(make);
        }
        let guard = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let index = self.index.load_full();
        if let Some(&id) = index.get(name) {
            return id;
        }
        let len = self.len();
        if len >= self.cap() {
            drop(guard);
            return self.overflow(make);
        }
        let name: Arc<str> = Arc::from(name);
        let value = make(&name);
        let _ = self.slots[len].set(Entry {
            name: Arc::clone(&name),
            value,
        });
        let mut next = Index::clone(&index);
        next.insert(Box::from(&*name), len as u32);
        self.index.store(Arc::new(next));
        self.len.store(len + 1, Ordering::Release);
        len as u32
    }

    fn overflow(&self, make: impl FnOnce(&Arc<str>) -> T) -> u32 {
        self.overflowed.fetch_add(1, Ordering::Relaxed);
        let id = self.cap();
        self.slots[id].get_or_init(|| {
            let name: Arc<str> = Arc::from(self.overflow_name);
            let value = make(&name);
            Entry { name, value }
        });
        id as u32
    }

    /// The entry of an id returned by [`resolve`](Self::resolve).
    ///
    /// # Panics
    ///
    /// For an id this registry did not return.
    #[inline]
    pub(crate) fn get(&self, id: u32) -> &Entry<T> {
        self.slots[id as usize]
            .get()
            .expect("ids come from resolve, which fills the slot first")
    }

    /// The entry called `name`, if registered.
    pub(crate) fn find(&self, name: &str) -> Option<&Entry<T>> {
        if name == self.overflow_name {
            return self.slots[self.cap()].get();
        }
        let id = *self.index.load().get(name)?;
        Some(self.get(id))
    }

    /// Every entry, overflow last when it exists.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry<T>> {
        let len = self.len();
        self.slots[..len]
            .iter()
            .chain(std::iter::once(&self.slots[self.cap()]))
            .filter_map(OnceLock::get)
    }
}

/// The methods known by name: OpenTelemetry's list.
const STANDARD: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

/// The most methods that can be added to the standard ones.
pub(crate) const MAX_EXTRA_METHODS: usize = 8;

/// Method labels: the standard methods, up to [`MAX_EXTRA_METHODS`] more,
/// and `_OTHER`.
#[derive(Clone, Debug)]
pub(crate) struct Methods {
    extra: Vec<Method>,
}

impl Default for Methods {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Methods {
    /// The standard methods plus `extra` (duplicates of standard methods
    /// dropped, cut to [`MAX_EXTRA_METHODS`]).
    pub(crate) fn new(extra: &[Method]) -> Self {
        let mut kept: Vec<Method> = Vec::new();
        for method in extra {
            if !STANDARD.contains(method)
                && !kept.contains(method)
                && kept.len() < MAX_EXTRA_METHODS
            {
                kept.push(method.clone());
            }
        }
        Self { extra: kept }
    }

    /// Number of labels, `_OTHER` included.
    pub(crate) fn len(&self) -> usize {
        STANDARD.len() + self.extra.len() + 1
    }

    /// The label index of `method`.
    #[inline]
    pub(crate) fn index(&self, method: &Method) -> usize {
        // Standard methods compare as enum tags, no string work.
        if let Some(i) = STANDARD.iter().position(|m| m == method) {
            return i;
        }
        match self.extra.iter().position(|m| m == method) {
            Some(i) => STANDARD.len() + i,
            None => self.len() - 1,
        }
    }

    /// The label of an index.
    pub(crate) fn label(&self, index: usize) -> &str {
        if index < STANDARD.len() {
            STANDARD[index].as_str()
        } else if index - STANDARD.len() < self.extra.len() {
            self.extra[index - STANDARD.len()].as_str()
        } else {
            OTHER_METHOD
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_past_the_cap_share_the_overflow_entry() {
        let registry: Registry<usize> = Registry::new(3, OVERFLOW);
        let ids: Vec<u32> = (0..10)
            .map(|i| registry.resolve(&format!("/r{i}"), |name| name.len()))
            .collect();
        assert_eq!(&ids[..3], &[0, 1, 2]);
        assert!(ids[3..].iter().all(|&id| id == 3));
        assert_eq!(registry.get(3).name.as_ref(), OVERFLOW);
        assert_eq!(registry.len(), 3);
        assert_eq!(registry.overflowed(), 7);
        // Known names keep their ids.
        assert_eq!(registry.resolve("/r1", |_| unreachable!()), 1);
        let names: Vec<&str> = registry.entries().map(|e| e.name.as_ref()).collect();
        assert_eq!(names, ["/r0", "/r1", "/r2", OVERFLOW]);
        assert_eq!(registry.find("/r2").map(|e| e.value), Some(3));
        assert!(registry.find("/r7").is_none());
    }

    #[test]
    fn concurrent_registration_gives_one_id_per_name() {
        let registry: Arc<Registry<()>> = Arc::new(Registry::new(100, OVERFLOW));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let registry = Arc::clone(&registry);
                std::thread::spawn(move || {
                    (0..50)
                        .map(|i| registry.resolve(&format!("/{i}"), |_| ()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<Vec<u32>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(results.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(registry.len(), 50);
    }

    #[test]
    fn unknown_methods_are_other() {
        let methods = Methods::new(&[Method::from_bytes(b"PROPFIND").unwrap(), Method::GET]);
        assert_eq!(methods.len(), 11);
        assert_eq!(methods.label(methods.index(&Method::GET)), "GET");
        assert_eq!(methods.label(methods.index(&Method::PATCH)), "PATCH");
        let propfind = Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(methods.label(methods.index(&propfind)), "PROPFIND");
        let brew = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(methods.label(methods.index(&brew)), OTHER_METHOD);
    }

    #[test]
    fn extra_methods_are_capped() {
        let many: Vec<Method> = (0..20)
            .map(|i| Method::from_bytes(format!("M{i}").as_bytes()).unwrap())
            .collect();
        let methods = Methods::new(&many);
        assert_eq!(methods.len(), 9 + MAX_EXTRA_METHODS + 1);
        assert_eq!(methods.label(methods.index(&many[19])), OTHER_METHOD);
    }

    proptest! {
        #[test]
        fn any_method_gets_a_bounded_label(token in "[A-Z]{1,12}") {
            let methods = Methods::default();
            let method = Method::from_bytes(token.as_bytes()).unwrap();
            let label = methods.label(methods.index(&method));
            prop_assert!(label == token || label == OTHER_METHOD);
            prop_assert!(methods.index(&method) < methods.len());
        }

        #[test]
        fn the_registry_never_exceeds_its_cap(
            names in prop::collection::vec("[a-z/]{1,8}", 0..200),
            cap in 1usize..50,
        ) {
            let registry: Registry<()> = Registry::new(cap, OVERFLOW);
            for name in &names {
                let id = registry.resolve(name, |_| ());
                prop_assert!((id as usize) <= cap);
                prop_assert_eq!(
                    registry.get(id).name.as_ref(),
                    if (id as usize) == cap { OVERFLOW } else { name.as_str() }
                );
            }
            prop_assert!(registry.len() <= cap);
            prop_assert!(registry.entries().count() <= cap + 1);
        }
    }
}
