//! History in one Redis key (feature `redis`).

use std::time::Duration;

use super::history::{History, HistoryStore};
use crate::error::Error;

/// History as JSON in one Redis key, so that every instance of a service
/// loads the same history and a new instance starts with it; the last save
/// wins. Each call opens its own short-lived synchronous connection with a
/// timeout (default 2 s) and blocks: from async code run it in
/// `spawn_blocking`. A Redis that is down is an [`Error::HistoryRedis`],
/// never a hang.
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

    /// The connect, read and write timeout of each call (default 2 s).
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
        let mut conn = self.connection()?;
        let json: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&self.key)
            .query(&mut conn)
            .map_err(|e| self.failed(e))?;
        json.map(|json| {
            serde_json::from_slice(&json).map_err(|e| self.failed(format!("not history: {e}")))
        })
        .transpose()
    }

    fn save(&self, history: &History) -> Result<(), Error> {
        let json = serde_json::to_vec(history).map_err(|e| self.failed(e))?;
        let mut conn = self.connection()?;
        redis::cmd("SET")
            .arg(&self.key)
            .arg(json)
            .query::<()>(&mut conn)
            .map_err(|e| self.failed(e))
    }
}
