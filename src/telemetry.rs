//! Logging with `tracing`: human-readable on a terminal, JSON lines otherwise.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the configured
/// filter. Calling it twice is harmless (the second call does nothing), which keeps
/// tests that start several servers simple.
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match log.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    // Each line carries its span's fields: a turn's conversation, job
                    // and chatbot ids, a request's id.
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
    // Already initialised (tests): keep the first subscriber.
    let _ = result;
}

/// A condition that may repeat thousands of times a second (shed webhooks, refused
/// signatures, a Graph API outage): logged at most once per interval, with how many
/// times it happened since the last line. The lines not written are counted in
/// `wabot_log_suppressed_total`; the condition's own metric counts every occurrence.
pub struct Throttle {
    condition: &'static str,
    every: std::time::Duration,
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    pub const fn new(condition: &'static str, every_secs: u64) -> Throttle {
        Throttle {
            condition,
            every: std::time::Duration::from_secs(every_secs),
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// Counts one occurrence. `Some(n)` when a line should be written now: `n` is
    /// the occurrences since the last line, this one included.
    pub fn hit(&self) -> Option<u64> {
        let Ok(mut state) = self.state.lock() else {
            return Some(1);
        };
        let (last, count) = &mut *state;
        *count += 1;
        let now = std::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.every) {
            crate::metrics::log_suppressed(self.condition, 1);
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(count))
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;

    #[test]
    fn a_throttle_writes_the_first_line_then_folds_the_rest() {
        let t = Throttle::new("test", 3600);
        assert_eq!(t.hit(), Some(1));
        assert_eq!(t.hit(), None);
        assert_eq!(t.hit(), None);
        let t = Throttle::new("test", 0);
        assert_eq!(t.hit(), Some(1));
        assert_eq!(t.hit(), Some(1));
    }
}
