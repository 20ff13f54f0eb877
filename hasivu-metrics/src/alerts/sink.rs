//! Where notifications go: the [`AlertSink`] trait and the log and channel
//! sinks.

use std::{future::Future, pin::Pin};

use tokio::sync::mpsc;

use super::{Notification, Status};
use crate::error::Error;

/// The future a sink returns.
pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// Delivers notification batches: one batch per evaluation that fired or
/// resolved something (so the batch is the group).
///
/// ```
/// use hasivu_metrics::alerts::{AlertSink, Notification, SinkFuture};
///
/// #[derive(Debug)]
/// struct Stdout;
///
/// impl AlertSink for Stdout {
///     fn name(&self) -> &str {
///         "stdout"
///     }
///     fn send<'a>(&'a self, batch: &'a [Notification]) -> SinkFuture<'a> {
///         Box::pin(async move {
///             for n in batch {
///                 println!("{} {} {}", n.status.as_str(), n.severity.as_str(), n.rule);
///             }
///             Ok(())
///         })
///     }
/// }
/// ```
pub trait AlertSink: Send + Sync + std::fmt::Debug + 'static {
    /// A name for logs and errors.
    fn name(&self) -> &str;

    /// Delivers `batch` (never empty).
    ///
    /// # Errors
    ///
    /// [`Error::Sink`] when the batch could not be delivered.
    fn send<'a>(&'a self, batch: &'a [Notification]) -> SinkFuture<'a>;
}

/// Logs each notification through `tracing`: firing at `WARN`, resolved at
/// `INFO`.
///
/// ```
/// use hasivu_metrics::alerts::{AlertManager, LogSink, Rule, Metric};
///
/// let manager = AlertManager::builder()
///     .rule(Rule::above("queue", Metric::Value("queue_depth".into())).warning(100.0))
///     .sink(LogSink)
///     .build()
///     .unwrap();
/// # let _ = manager;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct LogSink;

impl AlertSink for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    fn send<'a>(&'a self, batch: &'a [Notification]) -> SinkFuture<'a> {
        for n in batch {
            let route = n.route.as_deref().unwrap_or("");
            match n.status {
                Status::Firing => tracing::warn!(
                    rule = %n.rule, severity = n.severity.as_str(), route,
                    value = n.value, threshold = n.threshold, fingerprint = %n.fingerprint,
                    "alert firing"
                ),
                Status::Resolved => tracing::info!(
                    rule = %n.rule, severity = n.severity.as_str(), route,
                    value = n.value, fingerprint = %n.fingerprint,
                    "alert resolved"
                ),
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Sends each notification into a tokio channel, for a task of your own
/// (or a test) to consume.
///
/// ```
/// use hasivu_metrics::alerts::ChannelSink;
///
/// let (sink, mut receiver) = ChannelSink::new(64);
/// # let _ = (sink, receiver.try_recv());
/// ```
#[derive(Clone, Debug)]
pub struct ChannelSink {
    sender: mpsc::Sender<Notification>,
}

impl ChannelSink {
    /// A sink and the receiver of its notifications; `capacity` bounds the
    /// queue (sending waits when it is full).
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Notification>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (Self { sender }, receiver)
    }

    /// A sink sending into an existing channel.
    pub fn from_sender(sender: mpsc::Sender<Notification>) -> Self {
        Self { sender }
    }
}

impl AlertSink for ChannelSink {
    fn name(&self) -> &str {
        "channel"
    }

    fn send<'a>(&'a self, batch: &'a [Notification]) -> SinkFuture<'a> {
        Box::pin(async move {
            for n in batch {
                self.sender.send(n.clone()).await.map_err(|_| Error::Sink {
                    sink: "channel".to_owned(),
                    reason: "the receiver was dropped".to_owned(),
                })?;
            }
            Ok(())
        })
    }
}
