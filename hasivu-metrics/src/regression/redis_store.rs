//! History in one Redis key (feature `redis`).

use std::{sync::mpsc, time::Duration};

use super::history::{History, HistoryStore};
use crate::error::Error;

/// History as JSON in one Redis key, so that every instance of a service
/// loads the same history and a new instance starts with it; the last save
/// wins. Each call opens its own short-lived synchronous connection and
/// blocks: from async code run it in `spawn_blocking`.
///
/// Each call returns within its timeout (default 2 s). A Redis that is
/// down, stalled, or behind a connection that stopped answering is an
/// [`Error::HistoryRedis`] then, never a hang, and the next call connects
/// afresh, so the store works again as soon as Redis does. The exchange
/// runs on a short-lived thread of its own, left to finish by itself when
/// the call gives up (its socket waits are bounded by the same timeout):
/// a save reported as timed out may still land.
///
/// ```no_run
/// use hasivu_metrics::regression::{
///     HistoryStore, RedisHistoryStore, RegressionConfig, RegressionDetector,
/// };
///
/// let store = RedisHistoryStore::new("redis://127.0.0.1/", "myapp:regression-history")?;
/// let mut detector = RegressionDetector::load(RegressionConfig::default(), &store)?;
/// // ... record intervals; then, every few minutes and at shutdown:
/// detector.save(&store)?;
/// # Ok::<(), hasivu_metrics::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct RedisHistoryStore {
    client: redis::Client,
    key: String,
    timeout: Duration,
}

impl RedisHistoryStore {
    /// A store in `key` of the Redis at `url`. Nothing connects yet.
    ///
    /// # Errors
    ///
    /// [`Error::HistoryRedis`] for a URL the client does not accept.
    pub fn new(url: &str, key: impl Into<String>) -> Result<Self, Error> {
        let key = key.into();
        let client = redis::Client::open(url).map_err(|e| Error::HistoryRedis {
            key: key.clone(),
            reason: format!("invalid URL: {e}"),
        })?;
        Ok(Self {
            client,
            key,
            timeout: Duration::from_secs(2),
        })
    }

    /// How long each call may take, connecting included (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn failed(&self, reason: impl std::fmt::Display) -> Error {
        Error::HistoryRedis {
            key: self.key.clone(),
            reason: reason.to_string(),
        }
    }

    /// Runs `exchange` on a thread of its own and waits for it at most the
    /// timeout. A handshake or a reply read in pieces waits the timeout
    /// once per read, so the socket timeouts alone would not bound a call.
    fn bounded<T: Send + 'static>(
        &self,
        exchange: impl FnOnce(&Self) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (done, outcome) = mpsc::sync_channel(1);
        let store = self.clone();
        std::thread::Builder::new()
            .name("hasivu-history-redis".into())
            .spawn(move || {
                // The caller may have given up: nobody to tell then.
                let _ = done.send(exchange(&store));
            })
            .map_err(|e| self.failed(format!("no thread for the call: {e}")))?;
        match outcome.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(self.failed(format!("no answer within {:?}", self.timeout)))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.failed("the call panicked")),
        }
    }

    fn connection(&self) -> Result<redis::Connection, Error> {
        let conn = self
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(|e| self.failed(e))?;
        conn.set_read_timeout(Some(self.timeout))
            .and_then(|()| conn.set_write_timeout(Some(self.timeout)))
            .map_err(|e| self.failed(e))?;
        Ok(conn)
    }
}

impl HistoryStore for RedisHistoryStore {
    fn load(&self) -> Result<Option<History>, Error> {
        let json = self.bounded(|store| {
            let mut conn = store.connection()?;
            redis::cmd("GET")
                .arg(&store.key)
                .query::<Option<Vec<u8>>>(&mut conn)
                .map_err(|e| store.failed(e))
        })?;
        json.map(|json| {
            serde_json::from_slice(&json).map_err(|e| self.failed(format!("not history: {e}")))
        })
        .transpose()
    }

    fn save(&self, history: &History) -> Result<(), Error> {
        let json = serde_json::to_vec(history).map_err(|e| self.failed(e))?;
        self.bounded(move |store| {
            let mut conn = store.connection()?;
            redis::cmd("SET")
                .arg(&store.key)
                .arg(json)
                .query::<()>(&mut conn)
                .map_err(|e| store.failed(e))
        })
    }
}
