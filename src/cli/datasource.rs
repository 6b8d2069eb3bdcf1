//! `wabot datasource test ID` and `wabot connection test ID`: one real request, the
//! transformed items printed as JSON.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::config::Config;
use crate::datasource::model::{Connection, Method, TransformConfig};
use crate::datasource::{self, DataSourceClient, DataSourceError};
use crate::store;

#[derive(Debug, Subcommand)]
pub enum DataSourceCommand {
    /// Request a data source (its base URL, or --endpoint under it) and print the items.
    Test(SourceTestArgs),
}

#[derive(Debug, Args)]
pub struct SourceTestArgs {
    /// The data source's id (data_sources.id).
    pub id: Uuid,
    /// A path under the base URL to request instead of the base URL itself.
    #[arg(long, default_value = "")]
    pub endpoint: String,
    /// Dotted path to the item array in the answer (`data.items`).
    #[arg(long)]
    pub data_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConnectionCommand {
    /// Resolve a connection with an input document and print the items.
    Test(ConnectionTestArgs),
}

#[derive(Debug, Args)]
pub struct ConnectionTestArgs {
    /// The connection's id (data_source_connections.id).
    pub id: Uuid,
    /// The JSON document param_mapping JSONPaths read, e.g. '{"selected_brand":"bosch"}'.
    #[arg(long, default_value = "{}")]
    pub input: String,
}

pub async fn run_source(config: Config, cmd: DataSourceCommand) -> anyhow::Result<ExitCode> {
    let DataSourceCommand::Test(args) = cmd;
    let pool = store::connect_existing(&config).await?;
    let client = DataSourceClient::new(&config.datasource);
    let source = datasource::load_source(&pool, args.id).await?;
    let connection = Connection {
        id: None,
        name: format!("{} (test)", source.name),
        data_source_id: source.id,
        endpoint: datasource::model::checked_endpoint("--endpoint", &args.endpoint)?,
        method: Method::Get,
        default_params: Map::new(),
        default_body: None,
        data_key: args.data_key,
        transform: TransformConfig::default(),
        depends_on: None,
        param_mapping: Vec::new(),
        is_active: true,
    };
    match client.items(&source, &connection, &Value::Null).await {
        Ok(items) => print_items(&items),
        // The base URL of an API rarely lists items: show what it answered instead.
        Err(DataSourceError::DataKey { .. }) => {
            let answer = client.fetch(&source, &connection, &Value::Null).await?;
            eprintln!("the answer holds no item array (use --endpoint / --data-key); it was:");
            println!(
                "{}",
                truncated(&serde_json::to_string_pretty(&answer)?, 4000)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn run_connection(config: Config, cmd: ConnectionCommand) -> anyhow::Result<ExitCode> {
    let ConnectionCommand::Test(args) = cmd;
    let input: Value = serde_json::from_str(&args.input).context("--input is not JSON")?;
    let pool = store::connect_existing(&config).await?;
    let client = DataSourceClient::new(&config.datasource);
    let items = datasource::resolve_connection_items(&pool, &client, args.id, &input).await?;
    print_items(&items)
}

fn print_items(items: &[datasource::Item]) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(items)?);
    eprintln!("{}", super::fmt::count(items.len(), "item"));
    Ok(ExitCode::SUCCESS)
}

fn truncated(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}\n... ({} bytes in all)", &text[..at], text.len()),
        None => text.to_owned(),
    }
}
