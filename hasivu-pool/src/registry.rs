//! [`PoolManager`]: pools keyed by resource type and configuration key.

use std::{
    any::Any,
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures_util::future::{BoxFuture, FutureExt};

use crate::{DrainReport, Manager, Pool, PoolConfig, PoolManagerError, PoolStatus};

/// A pool of any manager, as the registry holds it.
trait AnyPool: Send + Sync {
    fn status(&self) -> PoolStatus;
    fn drain(&self, deadline: Duration) -> BoxFuture<'static, DrainReport>;
    fn as_any(&self) -> &dyn Any;
}

impl<M: Manager> AnyPool for Pool<M> {
    fn status(&self) -> PoolStatus {
        Pool::status(self)
    }

    fn drain(&self, deadline: Duration) -> BoxFuture<'static, DrainReport> {
        let pool = self.clone();
        async move { pool.drain(deadline).await }.boxed()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One pool's status in [`PoolManager::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolEntry {
    /// The resource type (`database`, `redis`, `external`…).
    pub kind: String,
    /// The configuration key (a database name, a host…).
    pub key: String,
    /// The pool's status.
    pub status: PoolStatus,
}

/// Pools keyed by resource type and configuration key, each with the
/// settings of its type, isolated from one another: a dead Redis opens
/// the Redis pool's breaker and fails its acquires fast, and the database
/// pool goes on untouched.
///
/// The report's per-type sizes are the defaults
/// ([`PoolManager::report_defaults`]): `database` 5, `redis` 3, `external`
/// 10 connections, at least 1 idle; other types get
/// [`PoolConfig::default`].
///
/// ```
/// use std::{convert::Infallible, time::Duration};
/// use hasivu_pool::{Manager, PoolManager};
///
/// struct Db;
/// impl Manager for Db {
///     type Connection = &'static str;
///     type Error = Infallible;
///     async fn create(&self) -> Result<&'static str, Infallible> { Ok("db") }
///     async fn validate(&self, _: &mut &'static str) -> Result<(), Infallible> { Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pools = PoolManager::report_defaults();
/// let db = pools.pool("database", "hasivu", Db).unwrap();
/// assert_eq!(db.config().max_size, 5);
/// assert_eq!(*db.get().await.unwrap(), "db");
///
/// // The same pool again, by type and key.
/// let again = pools.get::<Db>("database", "hasivu").unwrap();
/// assert_eq!(again.status().creates, 1);
///
/// for entry in pools.status() {
///     println!("{}/{}: {} in use of {}", entry.kind, entry.key, entry.status.in_use, entry.status.max_size);
/// }
/// pools.drain(Duration::from_secs(5)).await;
/// # }
/// ```
#[derive(Clone, Default)]
pub struct PoolManager {
    inner: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    kinds: BTreeMap<String, PoolConfig>,
    pools: BTreeMap<(String, String), Arc<dyn AnyPool>>,
}

impl std::fmt::Debug for PoolManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registry = self.registry();
        f.debug_struct("PoolManager")
            .field("kinds", &registry.kinds)
            .field("pools", &registry.pools.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PoolManager {
    /// No type settings: every pool gets [`PoolConfig::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The report's sizes: `database` 5, `redis` 3, `external` 10.
    pub fn report_defaults() -> Self {
        Self::new()
            .kind("database", PoolConfig::default().max_size(5))
            .kind("redis", PoolConfig::default().max_size(3))
            .kind("external", PoolConfig::default().max_size(10))
    }

    /// The registry. Nothing panics while holding it, but should a panic
    /// ever poison it, the maps stay consistent (each change is one map
    /// operation), so later calls go on.
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The settings of every pool of type `kind` made from now on.
    #[must_use]
    pub fn kind(self, kind: &str, config: PoolConfig) -> Self {
        self.registry().kinds.insert(kind.to_owned(), config);
        self
    }

    /// The pool for `kind` and `key`, made with `manager` and the type's
    /// settings when there is none yet (then `manager` is dropped unused).
    ///
    /// # Errors
    ///
    /// [`PoolManagerError::ManagerMismatch`] when a pool of another
    /// manager type is registered under the same type and key (two parts
    /// of a service disagree about what `kind`/`key` holds); the registry
    /// is unchanged and stays usable.
    pub fn pool<M: Manager>(
        &self,
        kind: &str,
        key: &str,
        manager: M,
    ) -> Result<Pool<M>, PoolManagerError> {
        let mut registry = self.registry();
        let id = (kind.to_owned(), key.to_owned());
        if let Some(existing) = registry.pools.get(&id) {
            return existing
                .as_any()
                .downcast_ref::<Pool<M>>()
                .cloned()
                .ok_or_else(|| PoolManagerError::ManagerMismatch {
                    kind: kind.to_owned(),
                    key: key.to_owned(),
                    requested: std::any::type_name::<M>(),
                });
        }
        let config = registry.kinds.get(kind).cloned().unwrap_or_default();
        let pool = Pool::builder(manager)
            .name(format!("{kind}/{key}"))
            .config(config)
            .build();
        registry.pools.insert(id, Arc::new(pool.clone()));
        Ok(pool)
    }

    /// Registers a pool built elsewhere (replacing any under the same type
    /// and key).
    pub fn insert<M: Manager>(&self, kind: &str, key: &str, pool: Pool<M>) {
        self.registry()
            .pools
            .insert((kind.to_owned(), key.to_owned()), Arc::new(pool));
    }

    /// The pool for `kind` and `key`, if it exists and holds `M`'s
    /// connections.
    pub fn get<M: Manager>(&self, kind: &str, key: &str) -> Option<Pool<M>> {
        let registry = self.registry();
        registry
            .pools
            .get(&(kind.to_owned(), key.to_owned()))?
            .as_any()
            .downcast_ref::<Pool<M>>()
            .cloned()
    }

    /// Every pool's status, by type then key.
    pub fn status(&self) -> Vec<PoolEntry> {
        let pools = self.snapshot();
        pools
            .into_iter()
            .map(|(kind, key, pool)| PoolEntry {
                kind,
                key,
                status: pool.status(),
            })
            .collect()
    }

    /// Drains every pool at once (see [`Pool::drain`]), each with the same
    /// `deadline`.
    pub async fn drain(&self, deadline: Duration) -> Vec<(String, String, DrainReport)> {
        let pools = self.snapshot();
        let drains = pools.into_iter().map(|(kind, key, pool)| async move {
            let report = pool.drain(deadline).await;
            (kind, key, report)
        });
        futures_util::future::join_all(drains).await
    }

    /// Every pool with its type and key, taken out of the lock.
    fn snapshot(&self) -> Vec<(String, String, Arc<dyn AnyPool>)> {
        let registry = self.registry();
        registry
            .pools
            .iter()
            .map(|((kind, key), pool)| (kind.clone(), key.clone(), Arc::clone(pool)))
            .collect()
    }

    /// Waits for `SIGTERM` or ctrl-c, then drains every pool with
    /// `deadline`. Spawn it at start; it returns the drain's reports.
    ///
    /// ```no_run
    /// # async fn run(pools: hasivu_pool::PoolManager) {
    /// let shutdown = tokio::spawn({
    ///     let pools = pools.clone();
    ///     async move { pools.drain_on_shutdown(std::time::Duration::from_secs(10)).await }
    /// });
    /// # let _ = shutdown;
    /// # }
    /// ```
    pub async fn drain_on_shutdown(
        &self,
        deadline: Duration,
    ) -> Vec<(String, String, DrainReport)> {
        shutdown_signal().await;
        tracing::info!("shutdown signal: draining connection pools");
        self.drain(deadline).await
    }
}

/// Resolves on ctrl-c, or on `SIGTERM` on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    futures_util::pin_mut!(ctrl_c, terminate);
    futures_util::future::select(ctrl_c, terminate).await;
}
