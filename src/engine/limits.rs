//! Meta's limits on interactive messages and the engine's own bounds per turn.

use std::time::Duration;

use crate::config::EngineConfig;

pub const MAX_BUTTONS: usize = 3;
pub const MAX_LIST_ROWS: usize = 10;
pub const BUTTON_TITLE_MAX: usize = 20;
pub const BUTTON_ID_MAX: usize = 256;
pub const ROW_TITLE_MAX: usize = 24;
pub const ROW_ID_MAX: usize = 200;
pub const ROW_DESCRIPTION_MAX: usize = 72;
pub const SECTION_TITLE_MAX: usize = 24;
pub const LIST_BUTTON_MAX: usize = 20;
pub const HEADER_MAX: usize = 60;
pub const FOOTER_MAX: usize = 60;
pub const INTERACTIVE_BODY_MAX: usize = 1024;
pub const TEXT_BODY_MAX: usize = 4096;

/// The first `max` characters of `text` (characters, not bytes, as Meta counts).
pub fn cut(text: &str, max: usize) -> String {
    crate::text::truncate_chars(text, max)
}

/// Bounds on one turn and one context, from `[engine]` in the configuration.
#[derive(Debug, Clone)]
pub struct EngineLimits {
    /// Nodes one turn may execute; the loop guard ends the context past it.
    pub max_steps_per_turn: u32,
    /// Nodes one context may execute over its whole life.
    pub max_steps_per_context: u32,
    /// How long a wait without its own timeout lasts before the context expires.
    pub context_ttl: Duration,
    /// The ceiling of a rest_api node's `apiTimeout`.
    pub max_http_timeout: Duration,
    /// Words that end the current context and start the chatbot again, on top of
    /// the chatbot's own `metadata.restartKeywords`.
    pub restart_keywords: Vec<String>,
    /// Messages one turn may send; a cycle of message nodes ends the context here,
    /// long before the step limit, so a customer is not flooded.
    pub max_sends_per_turn: u32,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            max_steps_per_turn: 100,
            max_steps_per_context: 10_000,
            context_ttl: Duration::from_secs(24 * 60 * 60),
            max_http_timeout: Duration::from_secs(30),
            restart_keywords: Vec::new(),
            max_sends_per_turn: 10,
        }
    }
}

impl EngineLimits {
    pub fn from_config(engine: &EngineConfig, max_http_timeout_ms: u64) -> Self {
        EngineLimits {
            max_steps_per_turn: engine.max_steps_per_turn,
            context_ttl: Duration::from_secs(engine.context_ttl_secs),
            max_http_timeout: Duration::from_millis(max_http_timeout_ms),
            max_sends_per_turn: engine.max_sends_per_turn,
            ..EngineLimits::default()
        }
    }
}
