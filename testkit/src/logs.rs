//! A tracing subscriber that keeps every event as a line, for tests that
//! check what a component logs (how often, at which level, with which
//! fields).

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
};

/// Collects every event as `LEVEL field=value …` (the message is the
/// `message` field). Install it for a closure with
/// [`tracing::subscriber::with_default`]; clones share the lines.
///
/// ```
/// let capture = hasivu_testkit::LogCapture::default();
/// tracing::subscriber::with_default(capture.clone(), || {
///     tracing::warn!(op = "get", "redis call failed");
/// });
/// assert_eq!(capture.events(), ["WARN message=redis call failed op=\"get\" "]);
/// ```
#[derive(Clone, Debug, Default)]
pub struct LogCapture(Arc<Mutex<Vec<String>>>);

impl LogCapture {
    /// The events so far, oldest first.
    pub fn events(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl tracing::Subscriber for LogCapture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(format!("{} ", event.metadata().level()));
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
