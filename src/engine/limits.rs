//! The engine's bounds per turn, and Meta's limits on messages.

use std::time::Duration;

use crate::config::EngineConfig;

// ---- Meta's limits on the messages wabot sends, in characters --------------------
//
// PROTOCOL.md "Sending". Written once, here: the engine cuts its messages to them,
// and `whatsapp::outbound` (which renders the engine's messages, so it already
// depends on the engine) enforces them again on every Graph API body. A body Meta
// refuses fails the message for good (131009).

pub const TEXT_BODY: usize = 4096;
pub const INTERACTIVE_BODY: usize = 1024;
pub const LIST_BODY: usize = 4096;
pub const HEADER_TEXT: usize = 60;
pub const FOOTER_TEXT: usize = 60;
pub const BUTTONS: usize = 3;
pub const BUTTON_ID: usize = 256;
pub const BUTTON_TITLE: usize = 20;
pub const LIST_BUTTON: usize = 20;
pub const SECTIONS: usize = 10;
pub const ROWS: usize = 10;
pub const SECTION_TITLE: usize = 24;
pub const ROW_ID: usize = 200;
pub const ROW_TITLE: usize = 24;
pub const ROW_DESCRIPTION: usize = 72;
pub const FLOW_CTA: usize = 20;
/// A media message's caption (images, videos, documents).
pub const CAPTION: usize = 1024;
/// A CTA URL button's label.
pub const CTA_DISPLAY_TEXT: usize = 20;

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
