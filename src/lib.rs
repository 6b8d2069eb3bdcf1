//! wabot runs WhatsApp Builder chatbots on the WhatsApp Cloud API.
//!
//! The parts, in the order a message meets them:
//!
//! * [`http`] receives Meta's webhooks (and the Flows endpoint) and stays thin: it
//!   checks the signature over the raw bytes and hands over.
//! * [`whatsapp`] knows Meta's wire formats and nothing else: webhook payload types,
//!   the signature check, the Graph API client, the Flows endpoint crypto.
//! * [`store`] holds all SQL. Ingest commits the raw event, the users, the
//!   conversation, the message and a turn job in one transaction before Meta gets
//!   its 200.
//! * [`worker`] claims turn jobs (one conversation at a time, leases against
//!   crashes), runs the [`engine`] and sends the replies in order through the Graph
//!   API, retrying what Meta says to retry.
//! * [`engine`] compiles a chatbot's ReactFlow graph into a petgraph graph and runs
//!   one turn at a time; it does no I/O and reads no clock of its own.
//! * [`datasource`] resolves data sources and connections over HTTP for Flows and
//!   dynamic questions.
//! * [`mapping`] turns the store's rows into the engine's values and back, so that
//!   neither of the two knows the other.
//! * [`egress`] is the one guard of user-configured URLs (rest_api nodes and data
//!   sources): no private addresses, DNS pinned, redirects re-checked.
//!
//! [`startup`] wires them into a server that starts on any listener and stops on a
//! cancellation token; `src/main.rs` is only the command line.

pub mod app;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod datasource;
pub mod dev;
pub mod egress;
pub mod engine;
pub mod http;
pub mod mapping;
pub mod media;
pub mod metrics;
pub mod replay;
pub mod service;
pub mod session;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod whatsapp;
pub mod worker;
