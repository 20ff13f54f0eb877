//! Helpers shared by the integration tests: a "database" the loaders read,
//! a loader that stops after reading it until the test lets it go, and the
//! writes that must overtake such a load.
#![allow(dead_code)] // each test binary uses its own part

use std::{
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hasivu_cache::{Cache, EntryOptions, InvalidationRules};
use tokio::sync::Notify;

/// The key every overtaking test loads.
pub(crate) const KEY: &str = "menu:daily:current";

/// The source of truth: one value, the loader calls that read it, and the
/// gate a loader stops at after reading.
#[derive(Debug)]
pub(crate) struct Source {
    value: Mutex<String>,
    calls: AtomicUsize,
    /// Notified when a gated loader has read the value.
    pub(crate) read: Notify,
    /// Lets a gated loader return.
    pub(crate) go: Notify,
}

type LoadFuture = Pin<Box<dyn Future<Output = Result<String, io::Error>> + Send>>;

impl Source {
    pub(crate) fn new(value: &str) -> Arc<Self> {
        Arc::new(Self {
            value: Mutex::new(value.to_owned()),
            calls: AtomicUsize::new(0),
            read: Notify::new(),
            go: Notify::new(),
        })
    }

    pub(crate) fn write(&self, value: &str) {
        *self.value.lock().unwrap() = value.to_owned();
    }

    pub(crate) fn current(&self) -> String {
        self.value.lock().unwrap().clone()
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// A loader that reads the value, says so, and returns it once let go:
    /// the slow database query during which the source changes.
    pub(crate) fn gated(self: &Arc<Self>) -> impl FnOnce() -> LoadFuture + Send + 'static {
        let source = Arc::clone(self);
        move || {
            Box::pin(async move {
                source.calls.fetch_add(1, Ordering::SeqCst);
                let read = source.current();
                source.read.notify_one();
                source.go.notified().await;
                Ok(read)
            })
        }
    }

    /// A loader that reads the value and returns it at once.
    pub(crate) fn loader(self: &Arc<Self>) -> impl FnOnce() -> LoadFuture + Send + 'static {
        let source = Arc::clone(self);
        move || {
            Box::pin(async move {
                source.calls.fetch_add(1, Ordering::SeqCst);
                Ok(source.current())
            })
        }
    }
}

/// The rules the overtaking tests build their caches with: invalidating
/// `school:*` also invalidates the key [`KEY`] itself (a rule whose target
/// is a key).
pub(crate) fn rules() -> InvalidationRules {
    InvalidationRules::new().rule("school:*", [KEY]).unwrap()
}

pub(crate) fn options() -> EntryOptions {
    EntryOptions::new(Duration::from_secs(60))
}

/// A write of [`KEY`] after its source changed to `value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// `invalidate_key(KEY)`, no rule covering it.
    InvalidateKey,
    /// `invalidate("school:*")`, whose rule reaches the key [`KEY`].
    InvalidateRule,
    /// `invalidate("menu:*")`, a prefix covering [`KEY`].
    InvalidatePrefix,
    /// `set(KEY, value)`.
    Set,
    /// `remove(KEY)`.
    Remove,
}

impl Write {
    pub(crate) const ALL: [Write; 5] = [
        Write::InvalidateKey,
        Write::InvalidateRule,
        Write::InvalidatePrefix,
        Write::Set,
        Write::Remove,
    ];

    pub(crate) async fn apply(self, cache: &Cache, value: &str) {
        match self {
            Write::InvalidateKey => drop(cache.invalidate_key(KEY).await.unwrap()),
            Write::InvalidateRule => drop(cache.invalidate("school:*").await.unwrap()),
            Write::InvalidatePrefix => drop(cache.invalidate("menu:*").await.unwrap()),
            Write::Set => cache.set(KEY, value.to_owned(), &options()).await.unwrap(),
            Write::Remove => cache.remove(KEY).await.unwrap(),
        }
    }

    /// What a cache may hold for [`KEY`] after this write of `value`: the
    /// value for a `set`, nothing otherwise.
    pub(crate) fn expected(self, value: &str) -> Option<String> {
        (self == Write::Set).then(|| value.to_owned())
    }
}
