//! The chatbot engine: compiles WhatsApp Builder's ReactFlow graphs into petgraph
//! graphs and runs conversations turn by turn. Pure logic: no I/O, no clock.
//!
//! * [`compile`] turns a [`ChatbotDoc`] into an immutable [`CompiledChatbot`]
//!   (petgraph graph, node lookup by id, outgoing edges by handle, the editor's
//!   variable names), reporting every [`ValidationError`] at once and
//!   [`Warning`]s for unreachable nodes and unused handles.
//! * [`run_turn`] applies an [`Event`] to a [`Context`] and returns the new context
//!   and the [`Outgoing`] messages. HTTP for rest_api nodes goes through the
//!   caller's [`HttpClient`]; the time is the caller's `now`.
//! * [`cache::ChatbotCache`] keeps compiled chatbots by id and version
//!   ([`version::hash`]: what a context is pinned to).
//!
//! NODES.md (WhatsApp Builder's node kinds, and what wabot does differently) is
//! the specification.

pub mod cache;
pub mod compile;
pub mod condition;
pub mod context;
pub mod doc;
pub mod event;
pub mod exec;
pub mod http;
pub mod limits;
pub mod node;
pub mod outgoing;
mod parse;
pub mod question;
pub mod rest;
pub mod validate;
pub mod vars;
pub mod version;

pub use compile::{compile, compile_json, CompiledChatbot};
pub use context::{Context, ContextStatus, Customer};
pub use doc::ChatbotDoc;
pub use event::{Answer, AnswerKind, Event, Inbound, MediaMessage};
pub use exec::{is_skip_word, run_turn, TurnResult};
pub use http::{HttpClient, HttpError, HttpRequest, HttpResponse};
pub use limits::EngineLimits;
pub use outgoing::{Choice, FlowAction, ListSection, MediaType, Outgoing};
pub use validate::{ValidationError, Warning};
