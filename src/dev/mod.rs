//! Tools for trying and testing wabot without Meta: a fake Graph API
//! ([`fake_graph`]) and a customer who types in a terminal ([`chat`]): what each line
//! becomes as Meta's webhook, and how the bot's Graph API calls read to a person.
//!
//! Nothing here runs in `wabot serve`; `wabot try`, `wabot dev fake-graph` and the
//! load benchmarks use it.

pub mod chat;
pub mod fake_graph;
pub mod fake_media;
pub mod fake_templates;

/// Seconds since the Unix epoch (0 on a clock before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
