//! Interval history and where it is kept across restarts.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One route's statistics over one interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Start of the interval, seconds since the Unix epoch.
    #[serde(rename = "t")]
    pub start_secs: u64,
    /// Requests in the interval.
    #[serde(rename = "n")]
    pub requests: u64,
    /// Server errors in the interval.
    #[serde(rename = "e")]
    pub errors: u64,
    /// 95th percentile duration in the interval, milliseconds (0 without
    /// requests).
    #[serde(rename = "p")]
    pub p95_ms: f64,
    /// Index into [`History::versions`] of the build that served it.
    #[serde(rename = "v")]
    pub version: u32,
}

/// Everything the detector keeps: build versions and every route's
/// interval series, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Build versions seen; index 0 is the empty "unknown" version.
    pub versions: Vec<String>,
    /// Each route's points, oldest first.
    pub routes: BTreeMap<String, Vec<Point>>,
}

/// Where history is saved and loaded from.
///
/// ```
/// use hasivu_metrics::regression::{FileStore, History, HistoryStore};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = FileStore::new(dir.path().join("history.json"));
/// assert_eq!(store.load().unwrap(), None);
/// store.save(&History::default()).unwrap();
/// assert_eq!(store.load().unwrap(), Some(History::default()));
/// ```
pub trait HistoryStore: Send + Sync + std::fmt::Debug {
    /// The saved history, `None` when nothing was saved yet.
    ///
    /// # Errors
    ///
    /// When the store cannot be read or holds something that is not
    /// history.
    fn load(&self) -> Result<Option<History>, Error>;

    /// Replaces the saved history.
    ///
    /// # Errors
    ///
    /// When the store cannot be written.
    fn save(&self, history: &History) -> Result<(), Error>;
}

/// History in a JSON file, replaced atomically (written to a temporary
/// file beside it, then renamed). The calls block: from async code run
/// them in `spawn_blocking`. Seven days of one-minute points take about
/// 0.5 MB per route.
#[derive(Clone, Debug)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path` (created on the first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::HistoryIo {
            path: self.path.clone(),
            source,
        }
    }
}

impl HistoryStore for FileStore {
    fn load(&self) -> Result<Option<History>, Error> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::HistoryFormat {
                path: self.path.clone(),
                source,
            })
    }

    fn save(&self, history: &History) -> Result<(), Error> {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let json = serde_json::to_vec(history).map_err(|source| Error::HistoryFormat {
            path: self.path.clone(),
            source,
        })?;
        let mut file = std::fs::File::create(&tmp).map_err(|e| self.io(e))?;
        file.write_all(&json).map_err(|e| self.io(e))?;
        file.sync_all().map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))
    }
}
