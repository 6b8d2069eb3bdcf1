//! wabot's integration tests: one binary, real PostgreSQL (`DATABASE_URL`, a fresh
//! database per test), real HTTP peers on loopback.

mod helpers;

mod api;
mod datasource;
mod datasource_support;
mod e2e;
mod egress;
mod engine;
mod engine_cli;
mod engine_kinds;
mod engine_props;
mod engine_store;
mod events;
mod flows;
mod flows_support;
mod graph_unreachable;
mod graph_version;
mod layering;
mod ops_cli;
mod people_ops;
mod pipeline;
mod replay;
mod retention;
mod schema;
mod secrets;
mod sender;
mod serve;
mod server_limits;
mod session_parity;
mod shutdown;
mod support_graph;
mod try_cli;
mod webhook;
mod webhook_echoes;
mod webhook_outage;
mod webhook_samples;
mod webhook_statuses;
mod webhook_unreadable;
