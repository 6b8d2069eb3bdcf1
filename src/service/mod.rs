//! What an operator can do, whoever asks: the CLI commands and the operator API
//! (`http/admin/`) are both thin callers of these functions, so a rule has one
//! implementation.

pub mod campaigns;
pub mod chatbots;
pub mod conversations;
pub mod customers;
pub mod messages;
pub mod templates;
pub mod tokens;
pub mod webhooks;

/// What was named does not exist: the API answers 404.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);
pub mod status;
