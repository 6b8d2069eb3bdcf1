//! Meta's WhatsApp Cloud API protocol, and only that: webhook payloads, the
//! signature check, the Graph API client, the Flows endpoint crypto.

pub mod flows;
pub mod flows_crypto;
pub mod graph;
pub mod media;
pub mod outbound;
pub mod signature;
pub mod templates;
pub mod webhook;
