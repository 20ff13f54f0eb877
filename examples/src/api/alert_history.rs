//! The alert history: every fire and resolve the alert manager notifies,
//! newest first, the last [`KEEP`]. In one Redis list when `REDIS_URL` is
//! set (`<HASIVU_REDIS_PREFIX>metrics:alert-history`, shared by the
//! instances and kept across restarts), else in process. A copy always stays
//! in process, so the dashboard still lists recent alerts while Redis is
//! down.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use hasivu_metrics::{
    Error,
    alerts::{AlertSink, Notification, SinkFuture},
};
use hasivu_pool::{Pool, RedisManager};

/// How many notifications are kept.
pub const KEEP: usize = 200;

const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(250);

/// An [`AlertSink`] that keeps the notifications, and reads them back.
#[derive(Clone, Debug)]
pub struct AlertHistory {
    local: Arc<Mutex<VecDeque<Notification>>>,
    redis: Option<(Pool<RedisManager>, String)>,
}

impl AlertHistory {
    /// In process only.
    pub fn local() -> Self {
        Self {
            local: Arc::default(),
            redis: None,
        }
    }

    /// In the Redis list `<prefix>metrics:alert-history`, and in process.
    pub fn redis(pool: Pool<RedisManager>, prefix: &str) -> Self {
        Self {
            local: Arc::default(),
            redis: Some((pool, format!("{prefix}metrics:alert-history"))),
        }
    }

    /// The last `limit` notifications (at most [`KEEP`]), newest first:
    /// from Redis when configured and reachable, else this process's.
    pub async fn recent(&self, limit: usize) -> Vec<Notification> {
        let limit = limit.min(KEEP);
        if let Some((pool, key)) = &self.redis {
            // The dashboard polls this: a Redis that is down costs it at
            // most a quarter of a second.
            let read = tokio::time::timeout(READ_TIMEOUT, Self::read(pool, key, limit)).await;
            match read {
                Ok(Ok(found)) => return found,
                Ok(Err(error)) => tracing::debug!(%error, "alert history read from this process"),
                Err(_) => tracing::debug!("alert history read timed out; read from this process"),
            }
        }
        let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        local.iter().take(limit).cloned().collect()
    }

    async fn read(
        pool: &Pool<RedisManager>,
        key: &str,
        limit: usize,
    ) -> Result<Vec<Notification>, Box<dyn std::error::Error + Send + Sync>> {
        let mut conn = pool.get().await?;
        let items: Vec<String> = redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(limit.saturating_sub(1))
            .query_async(&mut *conn)
            .await?;
        // An entry that does not parse (another version wrote it) is skipped.
        Ok(items
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect())
    }
}

impl AlertSink for AlertHistory {
    fn name(&self) -> &str {
        "history"
    }

    fn send<'a>(&'a self, batch: &'a [Notification]) -> SinkFuture<'a> {
        {
            let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
            for n in batch {
                local.push_front(n.clone());
            }
            local.truncate(KEEP);
        }
        Box::pin(async move {
            let Some((pool, key)) = &self.redis else {
                return Ok(());
            };
            let failed = |reason: String| Error::Sink {
                sink: "history".to_owned(),
                reason,
            };
            let items: Vec<String> = batch
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<_, _>>()
                .map_err(|e| failed(e.to_string()))?;
            let mut conn = pool.get().await.map_err(|e| failed(e.to_string()))?;
            redis::pipe()
                .atomic()
                .cmd("LPUSH")
                .arg(key)
                .arg(items)
                .ignore()
                .cmd("LTRIM")
                .arg(key)
                .arg(0)
                .arg(KEEP - 1)
                .ignore()
                .query_async::<()>(&mut *conn)
                .await
                .map_err(|e| failed(e.to_string()))
        })
    }
}
