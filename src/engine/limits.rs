//! The engine's bounds per turn, and its names for Meta's limits on messages.

use std::time::Duration;

use crate::config::EngineConfig;

// Meta's limits are written once, in `whatsapp::limits` (a leaf module of constants:
// the engine stays pure); these are the engine's names for them.
pub use crate::whatsapp::limits::{
    BUTTONS as MAX_BUTTONS, BUTTON_ID as BUTTON_ID_MAX, BUTTON_TITLE as BUTTON_TITLE_MAX,
    CAPTION as CAPTION_MAX, CTA_DISPLAY_TEXT as CTA_BUTTON_MAX, FOOTER_TEXT as FOOTER_MAX,
    HEADER_TEXT as HEADER_MAX, INTERACTIVE_BODY as INTERACTIVE_BODY_MAX,
    LIST_BUTTON as LIST_BUTTON_MAX, ROWS as MAX_LIST_ROWS, ROW_DESCRIPTION as ROW_DESCRIPTION_MAX,
    ROW_ID as ROW_ID_MAX, ROW_TITLE as ROW_TITLE_MAX, SECTION_TITLE as SECTION_TITLE_MAX,
    TEXT_BODY as TEXT_BODY_MAX,
};

/// The first `max` characters of a text (characters, not bytes, as Meta counts).
pub use crate::text::truncate_chars as cut;

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
