//! Where the regression detector's history is kept across restarts: a
//! JSON file (`HASIVU_HISTORY_PATH`), else one Redis key when `REDIS_URL`
//! is set (hasivu-metrics' `RedisHistoryStore`: shared by the instances,
//! the last one to save wins), else nowhere.

use hasivu_metrics::regression::{FileStore, History, HistoryStore, RedisHistoryStore};

use crate::api::{app::BoxError, config::Config};

/// The place of the history.
#[derive(Clone, Debug)]
pub enum HistoryPlace {
    /// Not kept: the history starts empty at every start.
    Nowhere,
    /// A JSON file, replaced atomically.
    File(FileStore),
    /// `<HASIVU_REDIS_PREFIX>metrics:regression-history` in Redis.
    Redis(RedisHistoryStore),
}

impl HistoryPlace {
    /// The place `config` names (see the module docs).
    ///
    /// # Errors
    ///
    /// A Redis URL the client does not accept.
    pub fn from_config(config: &Config) -> Result<Self, BoxError> {
        Ok(match (&config.history_path, &config.redis_url) {
            (Some(path), _) => Self::File(FileStore::new(path)),
            (None, Some(url)) => Self::Redis(RedisHistoryStore::new(
                url,
                format!("{}metrics:regression-history", config.redis_prefix),
            )?),
            (None, None) => Self::Nowhere,
        })
    }

    /// Where, for the logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Nowhere => "nowhere (set HASIVU_HISTORY_PATH or REDIS_URL)".to_owned(),
            Self::File(store) => store.path().display().to_string(),
            Self::Redis(store) => format!("redis key {}", store.key()),
        }
    }

    fn store(&self) -> Option<Box<dyn HistoryStore>> {
        match self {
            Self::Nowhere => None,
            Self::File(store) => Some(Box::new(store.clone())),
            Self::Redis(store) => Some(Box::new(store.clone())),
        }
    }

    /// The saved history; `None` when nothing was saved yet or it is kept
    /// nowhere.
    ///
    /// # Errors
    ///
    /// The file or Redis could not be read, or holds something else.
    pub async fn load(&self) -> Result<Option<History>, BoxError> {
        let Some(store) = self.store() else {
            return Ok(None);
        };
        // The stores block (file I/O, a synchronous Redis connection).
        Ok(tokio::task::spawn_blocking(move || store.load()).await??)
    }

    /// Replaces the saved history with `history`.
    ///
    /// # Errors
    ///
    /// The file or Redis could not be written.
    pub async fn save(&self, history: History) -> Result<(), BoxError> {
        let Some(store) = self.store() else {
            return Ok(());
        };
        Ok(tokio::task::spawn_blocking(move || store.save(&history)).await??)
    }
}
