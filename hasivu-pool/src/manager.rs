//! What a pool needs from its backend.

use std::future::Future;

/// Creates, checks and destroys connections of one kind.
///
/// ```
/// use std::convert::Infallible;
/// use hasivu_pool::Manager;
///
/// /// Connections are numbers; a real manager opens sockets.
/// struct Counter(std::sync::atomic::AtomicU32);
///
/// impl Manager for Counter {
///     type Connection = u32;
///     type Error = Infallible;
///
///     async fn create(&self) -> Result<u32, Infallible> {
///         Ok(self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
///     }
///
///     async fn validate(&self, _conn: &mut u32) -> Result<(), Infallible> {
///         Ok(())
///     }
/// }
/// ```
pub trait Manager: Send + Sync + 'static {
    /// The connection type.
    type Connection: Send + 'static;
    /// The backend's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a new connection.
    fn create(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// Checks an idle connection before it is handed out (a cheap query,
    /// a ping). Called on checkout when the connection has been idle for at
    /// least [`PoolConfig::validate_after`](crate::PoolConfig); an error
    /// destroys it and the pool tries the next one.
    ///
    /// The check runs in the caller's `get`. If that caller is dropped
    /// meanwhile (a client that left, a timeout around `get`), or the check
    /// panics, the connection is destroyed rather than reused, since it may
    /// be half-way through a round trip, and its slot is freed.
    fn validate(
        &self,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Closes a connection the pool retires (default: drop it).
    fn destroy(&self, conn: Self::Connection) -> impl Future<Output = ()> + Send {
        drop(conn);
        async {}
    }

    /// A cheap synchronous check when a connection comes back and before an
    /// idle one is handed out (default: fine). A broken connection is
    /// destroyed instead of reused. It never runs under the pool's lock; a
    /// panic in it is caught, logged and counts as broken.
    fn is_broken(&self, conn: &Self::Connection) -> bool {
        let _ = conn;
        false
    }
}

/// A shared manager is a manager (handy to keep a handle on it).
impl<M: Manager> Manager for std::sync::Arc<M> {
    type Connection = M::Connection;
    type Error = M::Error;

    fn create(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send {
        (**self).create()
    }

    fn validate(
        &self,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        (**self).validate(conn)
    }

    fn destroy(&self, conn: Self::Connection) -> impl Future<Output = ()> + Send {
        (**self).destroy(conn)
    }

    fn is_broken(&self, conn: &Self::Connection) -> bool {
        (**self).is_broken(conn)
    }
}
