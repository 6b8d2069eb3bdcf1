//! `wabot chatbot validate | import | render`: chatbot documents from files;
//! `wabot chatbot versions`: the versions of a stored chatbot that conversations run on.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use petgraph::visit::EdgeRef;
use serde_json::Value;

use super::fmt::{count, Align, Table};
use crate::config::Config;
use crate::engine::node::NodeKind;
use crate::engine::{compile, ChatbotDoc, CompiledChatbot};
use crate::service::chatbots;
use crate::store;

#[derive(Debug, Subcommand)]
pub enum ChatbotCommand {
    /// Compile chatbot files and report every error and warning; exits 1 when any
    /// file has errors.
    Validate {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Store a chatbot (a bare `{name, nodes, edges}` document or WhatsApp Builder's
    /// export) in the database and print its id. Refuses a chatbot with errors.
    Import {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Make it active (`isActive = true`), so that it answers new conversations.
        #[arg(long)]
        activate: bool,
    },
    /// Print the graph in Graphviz DOT, labelled with node labels and edge handles
    /// (`wabot chatbot render bot.json | dot -Tsvg > bot.svg`).
    Render {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// List the versions of a stored chatbot that conversations ran on, newest
    /// first, with the live conversations on each: a conversation finishes on the
    /// version it started on, whatever the editor changed since.
    Versions {
        #[arg(value_name = "ID")]
        id: uuid::Uuid,
    },
    /// Make a stored chatbot active: it answers new conversations.
    Activate {
        #[arg(value_name = "ID")]
        id: uuid::Uuid,
    },
    /// Make a stored chatbot inactive: conversations running on it finish; new ones
    /// do not start on it.
    Deactivate {
        #[arg(value_name = "ID")]
        id: uuid::Uuid,
    },
}

pub async fn run(config: Config, cmd: ChatbotCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ChatbotCommand::Validate { files } => {
            let mut failed = false;
            let mut catalogue: Option<Result<Vec<store::templates::TemplateRow>, String>> = None;
            for file in files {
                if !validate(&file) {
                    failed = true;
                    continue;
                }
                let Ok(Ok((bot, _))) = read_doc(&file).map(|doc| compile(&doc)) else {
                    continue;
                };
                let uses = template_uses(&bot);
                if uses.is_empty() {
                    continue;
                }
                // The catalogue is read once, only when a chatbot sends templates.
                if catalogue.is_none() {
                    catalogue = Some(read_catalogue(&config).await);
                }
                match catalogue.as_ref() {
                    Some(Ok(rows)) => {
                        for problem in check_templates(&uses, rows) {
                            println!("{}: error: {problem}", file.display());
                            failed = true;
                        }
                    }
                    Some(Err(why)) => println!(
                        "{}: warning: its templates were not checked against the catalogue: {why}",
                        file.display()
                    ),
                    None => {}
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        ChatbotCommand::Import { file, activate } => {
            let doc = read_doc(&file)?;
            if let Err(errors) = compile(&doc) {
                for e in &errors {
                    eprintln!("{}: error: {e}", file.display());
                }
                anyhow::bail!(
                    "{} has {}; not imported",
                    file.display(),
                    count(errors.len(), "error")
                );
            }
            // Like `wabot serve`, import creates the database and applies the
            // migrations: it is often the first command run against a new one.
            let pool = store::connect(&config)
                .await
                .context("cannot connect to the database (DATABASE_URL)")?;
            store::migrate(&pool)
                .await
                .context("cannot apply database migrations")?;
            match chatbots::import(&pool, &doc, activate).await? {
                Ok(id) => println!("{id}"),
                Err(errors) => anyhow::bail!("not imported: {}", errors.join("; ")),
            }
            Ok(ExitCode::SUCCESS)
        }
        ChatbotCommand::Versions { id } => {
            let pool = store::connect(&config)
                .await
                .context("cannot connect to the database (DATABASE_URL)")?;
            print!("{}", render_versions(&chatbots::versions(&pool, id).await?));
            Ok(ExitCode::SUCCESS)
        }
        ChatbotCommand::Activate { id } => set_active(&config, id, true).await,
        ChatbotCommand::Deactivate { id } => set_active(&config, id, false).await,
        ChatbotCommand::Render { file } => {
            let doc = read_doc(&file)?;
            match compile(&doc) {
                Ok((bot, _)) => {
                    print!("{}", render_dot(&bot));
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{}: error: {e}", file.display());
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

async fn set_active(config: &Config, id: uuid::Uuid, active: bool) -> anyhow::Result<ExitCode> {
    let pool = store::connect_existing(config)
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    chatbots::set_active(&pool, id, active).await?;
    let done = if active { "activated" } else { "deactivated" };
    println!("{done}: chatbot {id}");
    Ok(ExitCode::SUCCESS)
}

/// `wabot chatbot versions`: one line per version, the current graph marked.
fn render_versions(v: &chatbots::Versions) -> String {
    let (current, versions) = (&v.current, &v.versions);
    let short = |hash: &str| hash.chars().take(12).collect::<String>();
    let mut out = format!(
        "{} ({}): {}\n",
        v.name,
        v.chatbot_id,
        count(versions.len(), "version")
    );
    if versions.is_empty() {
        out.push_str("no conversation has run on it yet\n");
        return out;
    }
    let mut table = Table::new(
        "  ",
        &[
            ("VERSION", Align::Left),
            ("FIRST RUN", Align::Left),
            ("NODES", Align::Right),
            ("LIVE", Align::Right),
            ("", Align::Left),
        ],
    );
    for v in versions {
        table.row(vec![
            short(&v.hash),
            v.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            v.nodes.to_string(),
            v.live.to_string(),
            if &v.hash == current {
                "current".to_owned()
            } else {
                String::new()
            },
        ]);
    }
    out.push_str(&table.render());
    if !versions.iter().any(|v| &v.hash == current) {
        let _ = writeln!(
            out,
            "the current graph ({}) has not run yet: the next conversation starts on it",
            short(current)
        );
    }
    out
}

/// Reads a file as JSON.
fn read_json(file: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

/// Reads and parses a chatbot file.
pub fn read_doc(file: &Path) -> anyhow::Result<ChatbotDoc> {
    let value = read_json(file)?;
    ChatbotDoc::from_json(&value).with_context(|| format!("{} is not a chatbot", file.display()))
}

/// Prints the file's report; whether it compiled.
/// A template a chatbot sends: its node, what it names, and the parameters a
/// buttons question fills itself (its buttons' ids as quick-reply payloads).
struct TemplateUse {
    node: String,
    spec: crate::engine::node::TemplateSpec,
    implied: Vec<String>,
}

fn template_uses(bot: &CompiledChatbot) -> Vec<TemplateUse> {
    use crate::engine::node::NodeKind;
    bot.nodes()
        .filter_map(|n| match &n.kind {
            NodeKind::Message(m) => m.template.as_ref().map(|t| TemplateUse {
                node: n.id.clone(),
                spec: (**t).clone(),
                implied: Vec::new(),
            }),
            NodeKind::Question(q) => q.template.as_ref().map(|t| TemplateUse {
                node: n.id.clone(),
                spec: (**t).clone(),
                implied: (0..q.buttons.len())
                    .map(|i| format!("button.{i}"))
                    .collect(),
            }),
            _ => None,
        })
        .collect()
}

async fn read_catalogue(config: &Config) -> Result<Vec<store::templates::TemplateRow>, String> {
    let pool = store::connect_existing(config)
        .await
        .map_err(|e| format!("cannot connect to the database (DATABASE_URL): {e}"))?;
    store::templates::list(&pool)
        .await
        .map_err(|e| format!("cannot read wabot_templates (is the database migrated?): {e}"))
}

/// Each use against the synced catalogue: the template exists in that language, is
/// approved, and the parameters are the ones it takes.
fn check_templates(uses: &[TemplateUse], rows: &[store::templates::TemplateRow]) -> Vec<String> {
    let mut problems = Vec::new();
    for u in uses {
        let (name, language) = (&u.spec.name, &u.spec.language);
        let Some(row) = rows
            .iter()
            .find(|r| &r.name == name && &r.language == language)
        else {
            problems.push(format!(
                "node `{}`: template `{name}` ({language}) is not in the catalogue (`wabot \
                 templates sync`?)",
                u.node
            ));
            continue;
        };
        if row.status != "APPROVED" {
            problems.push(format!(
                "node `{}`: template `{name}` ({language}) is {}, not APPROVED",
                u.node, row.status
            ));
        }
        let params: crate::whatsapp::templates::Parameters =
            serde_json::from_value(row.parameters.clone()).unwrap_or_default();
        let mut given: std::collections::BTreeMap<String, String> =
            u.spec.parameters.iter().cloned().collect();
        for key in &u.implied {
            given.entry(key.clone()).or_default();
        }
        for p in params.check(&given) {
            problems.push(format!("node `{}`: template `{name}`: {p}", u.node));
        }
    }
    problems
}

fn validate(file: &Path) -> bool {
    let report = match read_json(file) {
        Ok(value) => chatbots::validate(&value),
        Err(e) => {
            println!("{}: error: {e:#}", file.display());
            return false;
        }
    };
    for w in &report.warnings {
        println!("{}: warning: {w}", file.display());
    }
    for e in &report.errors {
        println!("{}: error: {e}", file.display());
    }
    if report.ok {
        println!(
            "{}: ok: \"{}\", {}, {}",
            file.display(),
            report.name.as_deref().unwrap_or(""),
            count(report.nodes.unwrap_or(0), "node"),
            count(report.warnings.len(), "warning")
        );
    } else {
        println!(
            "{}: {}",
            file.display(),
            count(report.errors.len(), "error")
        );
    }
    report.ok
}

/// The graph in DOT: one box per node (label, type, output variable), one arrow per
/// edge labelled with its handle.
pub fn render_dot(bot: &CompiledChatbot) -> String {
    let quote = |s: &str| {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        )
    };
    let mut out = String::new();
    let _ = writeln!(out, "digraph chatbot {{");
    let _ = writeln!(out, "  label={};", quote(bot.name()));
    let _ = writeln!(out, "  rankdir=TB;");
    let _ = writeln!(
        out,
        "  node [shape=box, style=rounded, fontname=\"Helvetica\"];"
    );
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=10];");
    let graph = bot.graph();
    for index in graph.node_indices() {
        let node = &graph[index];
        let shape = match node.kind {
            NodeKind::Start => "oval",
            NodeKind::Condition(_) => "diamond",
            NodeKind::Question(_) => "box",
            NodeKind::RestApi(_) => "component",
            NodeKind::Flow(_) => "parallelogram",
            NodeKind::Message(_) | NodeKind::Calendar => "note",
        };
        let mut label = if node.label.is_empty() {
            node.id.clone()
        } else {
            node.label.clone()
        };
        label.push('\n');
        label.push_str(node.kind.type_name());
        if let Some(var) = &node.var_name {
            label.push_str(&format!(" · {var}"));
        }
        let _ = writeln!(
            out,
            "  {} [label={}, shape={shape}];",
            quote(&node.id),
            quote(&label)
        );
    }
    for edge in graph.edge_references() {
        let (from, to) = (&graph[edge.source()].id, &graph[edge.target()].id);
        match edge.weight().handle.as_deref() {
            Some(handle) => {
                let _ = writeln!(
                    out,
                    "  {} -> {} [label={}];",
                    quote(from),
                    quote(to),
                    quote(handle)
                );
            }
            None => {
                let _ = writeln!(out, "  {} -> {};", quote(from), quote(to));
            }
        }
    }
    out.push_str("}\n");
    out
}
