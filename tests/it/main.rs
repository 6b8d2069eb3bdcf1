//! wabot's integration tests: one binary, real PostgreSQL (`DATABASE_URL`, a fresh
//! database per test), real HTTP peers on loopback.

mod helpers;

mod datasource;
mod datasource_support;
mod flows;
mod flows_support;
mod schema;
mod serve;
