//! Where the regression detector's history is kept across restarts: a
//! JSON file (`HASIVU_HISTORY_PATH`), else one Redis key when `REDIS_URL`
//! is set (shared by the instances, the last one to save wins), else
//! nowhere.

use hasivu_metrics::regression::{FileStore, History, HistoryStore};
use hasivu_pool::{Pool, RedisManager};

use crate::api::{app::BoxError, config::Config};

/// The place of the history.
#[derive(Clone, Debug)]
pub enum HistoryPlace {
    /// Not kept: the history starts empty at every start.
    Nowhere,
    /// A JSON file, replaced atomically.
    File(FileStore),
    /// One Redis key holding the JSON.
    Redis {
        /// The API's Redis pool.
        pool: Pool<RedisManager>,
        /// `<HASIVU_REDIS_PREFIX>metrics:regression-history`.
        key: String,
    },
}

impl HistoryPlace {
    /// The place `config` names (see the module docs).
    pub fn from_config(config: &Config, redis: Option<&Pool<RedisManager>>) -> Self {
        match (&config.history_path, redis) {
            (Some(path), _) => Self::File(FileStore::new(path)),
            (None, Some(pool)) => Self::Redis {
                pool: pool.clone(),
                key: format!("{}metrics:regression-history", config.redis_prefix),
            },
            (None, None) => Self::Nowhere,
        }
    }

    /// Where, for the logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Nowhere => "nowhere (set HASIVU_HISTORY_PATH or REDIS_URL)".to_owned(),
            Self::File(store) => store.path().display().to_string(),
            Self::Redis { key, .. } => format!("redis key {key}"),
        }
    }

    /// The saved history; `None` when nothing was saved yet or it is kept
    /// nowhere.
    ///
    /// # Errors
    ///
    /// The file or Redis could not be read, or holds something else.
    pub async fn load(&self) -> Result<Option<History>, BoxError> {
        match self {
            Self::Nowhere => Ok(None),
            Self::File(store) => {
                let store = store.clone();
                Ok(tokio::task::spawn_blocking(move || store.load()).await??)
            }
            Self::Redis { pool, key } => {
                let mut conn = pool.get().await?;
                let json: Option<String> =
                    redis::cmd("GET").arg(key).query_async(&mut *conn).await?;
                Ok(json.map(|json| serde_json::from_str(&json)).transpose()?)
            }
        }
    }

    /// Replaces the saved history with `history`.
    ///
    /// # Errors
    ///
    /// The file or Redis could not be written.
    pub async fn save(&self, history: History) -> Result<(), BoxError> {
        match self {
            Self::Nowhere => Ok(()),
            Self::File(store) => {
                let store = store.clone();
                Ok(tokio::task::spawn_blocking(move || store.save(&history)).await??)
            }
            Self::Redis { pool, key } => {
                let json = serde_json::to_string(&history)?;
                let mut conn = pool.get().await?;
                redis::cmd("SET")
                    .arg(key)
                    .arg(json)
                    .query_async::<()>(&mut *conn)
                    .await?;
                Ok(())
            }
        }
    }
}
