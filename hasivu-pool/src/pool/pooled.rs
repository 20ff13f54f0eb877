//! [`Pooled`]: a checked-out connection that goes back when dropped.

use std::{
    ops::{Deref, DerefMut},
    sync::Arc,
};

use super::{Shared, state::Conn};
use crate::Manager;

/// A connection from a [`Pool`](crate::Pool). Dereferences to the
/// connection; dropping it returns the connection to the pool (or retires
/// it when it is broken, too old or used up).
pub struct Pooled<M: Manager> {
    conn: Option<Conn<M::Connection>>,
    pool: Arc<Shared<M>>,
    broken: bool,
}

impl<M: Manager> Pooled<M> {
    pub(super) fn new(conn: Conn<M::Connection>, pool: Arc<Shared<M>>) -> Self {
        Self {
            conn: Some(conn),
            pool,
            broken: false,
        }
    }

    /// Marks the connection broken: it is destroyed instead of reused (call
    /// it after an error that leaves the connection in an unknown state).
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Takes the connection out of the pool for good; its slot is freed.
    pub fn detach(mut self) -> M::Connection {
        let conn = self.conn.take().expect("a pooled connection");
        self.pool.lock().checked_out.remove(&conn.id);
        self.pool.free_slot();
        conn.raw
    }

    /// How many times this connection has been checked out, this time
    /// included.
    pub fn uses(&self) -> u32 {
        self.conn.as_ref().map_or(0, |c| c.uses)
    }
}

impl<M: Manager> Deref for Pooled<M> {
    type Target = M::Connection;

    fn deref(&self) -> &M::Connection {
        &self.conn.as_ref().expect("a pooled connection").raw
    }
}

impl<M: Manager> DerefMut for Pooled<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        &mut self.conn.as_mut().expect("a pooled connection").raw
    }
}

impl<M: Manager> Drop for Pooled<M> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.release(conn, self.broken);
        }
    }
}

impl<M: Manager> std::fmt::Debug for Pooled<M>
where
    M::Connection: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("conn", &self.conn.as_ref().map(|c| &c.raw))
            .field("uses", &self.uses())
            .finish()
    }
}
