//! `wabot simulate FILE`: chat with a chatbot in the terminal through the same
//! executor the daemon runs. Reads stdin line by line, so it is scriptable.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

use crate::config::Config;
use crate::egress::rest_api::{HttpOptions, ReqwestHttp};
use crate::engine::compile::matches_keyword;
use crate::engine::context::reason;
use crate::engine::{
    compile, run_turn, AnswerKind, CompiledChatbot, Context, ContextStatus, Customer, EngineLimits,
    Event, FlowAction, Inbound, MediaMessage, Outgoing,
};
use crate::session::{self, Decision, Input, Rules, Skip};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The chatbot file (a bare document or WhatsApp Builder's export).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Set a variable before the conversation starts (repeatable); the value is read
    /// as JSON when it parses, else as text: `--var api_base=http://127.0.0.1:8080`.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// The customer's phone number (`customer_phone`).
    #[arg(long, default_value = "905551234567")]
    pub phone: String,
    /// The customer's profile name (`customer_name`).
    #[arg(long, default_value = "Simulator")]
    pub name: String,
    /// Let rest_api nodes reach private and loopback addresses (otherwise only the
    /// networks in WABOT_DATASOURCE_ALLOWED_NETWORKS are).
    #[arg(long)]
    pub allow_private: bool,
}

const HELP: &str = "Type an answer; a number picks a button or list row. Commands: /flow {json} \
                    answers a Flow, /location LAT LNG [NAME] shares a location, /image \
                    [CAPTION] sends a photo, /timeout lets the wait run out, /vars shows the variables, \
                    /restart starts over, /quit ends.";

pub async fn run(config: Config, args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let doc = super::chatbot::read_doc(&args.file)?;
    let bot = match compile(&doc) {
        Ok((bot, warnings)) => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            bot
        }
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let http = ReqwestHttp::with_options(HttpOptions {
        allowed_networks: config.datasource.allowed_networks.clone(),
        allow_all: args.allow_private,
        max_response_bytes: config.datasource.max_response_bytes,
    })?;
    let mut sim = Simulator {
        limits: EngineLimits::from_config(&config.engine, config.datasource.max_timeout_ms),
        customer: Customer {
            phone: args.phone.clone(),
            name: Some(args.name.clone()),
            ..Customer::default()
        },
        preset: parse_vars(&args.vars)?,
        context: None,
        deadline: None,
        choices: Vec::new(),
        rules: Rules::new(&config.session),
        opted_out: false,
        bot,
        http,
    };
    let interactive = std::io::stdin().is_terminal();
    println!("Chatting with \"{}\". {HELP}", sim.bot.name());
    sim.begin().await;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        if interactive {
            use std::io::Write as _;
            print!("you> ");
            let _ = std::io::stdout().flush();
        }
        let Some(line) = lines.next_line().await? else {
            break;
        };
        if !interactive {
            println!("you> {line}");
        }
        if !sim.input(line.trim()).await {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_vars(pairs: &[String]) -> anyhow::Result<Vec<(String, Value)>> {
    pairs
        .iter()
        .map(|pair| {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--var {pair}: expected NAME=VALUE"))?;
            let value =
                serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
            Ok((name.trim().to_owned(), value))
        })
        .collect()
}

/// A line for each rest_api call of the turn that failed, and why: the chatbot may
/// go on along its error path without saying so, and the person at the terminal is
/// the one who has to fix the URL or start the service.
fn failed_calls(walked: &[String], context: &Context) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    walked
        .iter()
        .filter(|id| seen.insert(id.as_str()))
        .filter_map(|id| {
            let output = context.node_outputs.get(id)?;
            let text = |key: &str| output.get(key).and_then(Value::as_str);
            if text("nodeType") != Some("rest_api")
                || output.get("success").and_then(Value::as_bool) != Some(false)
            {
                return None;
            }
            let label = text("nodeLabel")
                .filter(|l| !l.is_empty() && *l != id)
                .map(|l| format!(" ({l})"))
                .unwrap_or_default();
            let why = match (
                text("error"),
                output.get("statusCode").and_then(Value::as_i64),
            ) {
                (Some(error), _) => error.to_owned(),
                (None, Some(status)) => format!("HTTP {status}"),
                (None, None) => "no reason given".to_owned(),
            };
            Some(format!("[rest_api `{id}`{label} failed: {why}]"))
        })
        .collect()
}

struct Simulator {
    bot: CompiledChatbot,
    http: ReqwestHttp,
    limits: EngineLimits,
    customer: Customer,
    preset: Vec<(String, Value)>,
    context: Option<Context>,
    deadline: Option<DateTime<Utc>>,
    /// The ids of the buttons or rows the last prompt offered, in display order.
    choices: Vec<(String, bool)>,
    /// The session rules, as the daemon runs them.
    rules: Rules,
    /// The customer said an opt-out word (and no opt-in word since).
    opted_out: bool,
}

impl Simulator {
    /// Starts a new conversation, as the worker does for a first message.
    async fn begin(&mut self) {
        let mut context = Context::start(
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            &self.bot,
            &self.customer,
        );
        for (name, value) in &self.preset {
            context.variables.insert(name.clone(), value.clone());
        }
        self.context = Some(context);
        // A fresh context never asks to restart.
        self.turn(Event::ConversationStarted, Utc::now()).await;
    }

    /// Handles one line; false to stop.
    async fn input(&mut self, line: &str) -> bool {
        let active = self.context.as_ref().is_some_and(|c| c.is_active);
        match line {
            "/quit" | "/exit" => return false,
            "/restart" => {
                self.begin().await;
                return true;
            }
            "/vars" => {
                let vars = self
                    .context
                    .as_ref()
                    .map(|c| Value::Object(c.variables.clone()));
                println!(
                    "{}",
                    serde_json::to_string_pretty(&vars).unwrap_or_default()
                );
                return true;
            }
            "" => return true,
            _ => {}
        }
        if line == "/timeout" {
            if !active {
                println!("[{}]", Skip::NoActiveContext.note());
                return true;
            }
            let at = self.deadline.unwrap_or_else(Utc::now);
            if self.turn(Event::WaitTimedOut, at).await {
                self.begin().await;
            }
            return true;
        }
        let event = if let Some(rest) = line.strip_prefix("/location") {
            let mut parts = rest.split_whitespace();
            let mut number = || {
                parts
                    .next()
                    .and_then(|v| v.trim_end_matches(',').parse().ok())
            };
            let (latitude, longitude) = (number(), number());
            let name: Vec<&str> = parts.collect();
            Inbound::Location {
                latitude,
                longitude,
                name: (!name.is_empty()).then(|| name.join(" ")),
                address: None,
            }
            .into_event()
        } else if let Some(caption) = line.strip_prefix("/image") {
            let caption = caption.trim();
            Inbound::Media(MediaMessage {
                kind: AnswerKind::Image,
                caption: (!caption.is_empty()).then(|| caption.to_owned()),
                mime_type: Some("image/jpeg".to_owned()),
                media_id: Some("simulated".to_owned()),
                sha256: None,
                filename: None,
                voice: None,
                stored: None,
            })
            .into_event()
        } else if let Some(json) = line.strip_prefix("/flow") {
            let response = serde_json::from_str(json.trim())
                .unwrap_or_else(|_| Value::Object(Default::default()));
            Event::FlowReply {
                flow_token: None,
                response,
            }
        } else {
            let picked = line
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| self.choices.get(i).cloned());
            match picked {
                Some((id, true)) => Event::InboundMessage {
                    text: None,
                    button_id: None,
                    list_row_id: Some(id),
                    answer: None,
                },
                Some((id, false)) => Event::InboundMessage {
                    text: None,
                    button_id: Some(id),
                    list_row_id: None,
                    answer: None,
                },
                None => Event::InboundMessage {
                    text: Some(line.to_owned()),
                    button_id: None,
                    list_row_id: None,
                    answer: None,
                },
            }
        };
        // The daemon's rules decide (the terminal has no agent: no handover).
        let state = session::State {
            has_context: active,
            handover: None,
            opted_out: self.opted_out,
        };
        let input = Input::Message(&event);
        let skip_word = session::is_skip_word(input);
        match session::decide(&self.rules, &state, input, Utc::now()) {
            Decision::Skip(why) => println!("[{}]", why.note()),
            decision @ (Decision::OptOut { .. } | Decision::OptIn { .. }) => {
                let out = matches!(decision, Decision::OptOut { .. });
                self.opted_out = out;
                let text = if out {
                    self.rules.opt_out_message.clone()
                } else {
                    self.rules.opt_in_message.clone()
                };
                self.show(&Outgoing::Text { body: text });
                if out {
                    if let Some(context) = self.context.as_mut().filter(|c| c.is_active) {
                        context.finish(ContextStatus::Completed, reason::OPTED_OUT, Utc::now());
                        println!("[conversation completed: {}]", reason::OPTED_OUT);
                    }
                }
                println!(
                    "[the customer is opted {}]",
                    if out { "out" } else { "back in" }
                );
            }
            Decision::Start { .. } => {
                let text = match &event {
                    Event::InboundMessage { text, .. } => text.as_deref(),
                    _ => None,
                };
                let keywords = self.bot.trigger_keywords();
                if !keywords.is_empty() && !text.is_some_and(|t| matches_keyword(keywords, t)) {
                    println!(
                        "[{}: the chatbot's trigger keywords do not match]",
                        Skip::NoActiveChatbot.note()
                    );
                } else {
                    self.begin().await;
                }
            }
            Decision::Continue => {
                let restart = self.turn(event, Utc::now()).await;
                let status = self
                    .context
                    .as_ref()
                    .map_or(ContextStatus::Completed, |c| c.status);
                if session::after_run(skip_word, restart, status) {
                    self.begin().await;
                } else if restart {
                    println!(
                        "[{}: no conversation is active]",
                        Skip::SkipWordStartsNothing.note()
                    );
                }
            }
        }
        true
    }

    /// Runs one turn and shows its messages; whether the chatbot asks to start over.
    async fn turn(&mut self, event: Event, now: DateTime<Utc>) -> bool {
        let Some(context) = self.context.take() else {
            return false;
        };
        let result = run_turn(&self.bot, context, event, now, &self.http, &self.limits).await;
        for line in failed_calls(&result.walked, &result.context) {
            println!("{line}");
        }
        self.choices.clear();
        for send in &result.sends {
            self.show(send);
        }
        self.deadline = result.wait_deadline;
        let context = result.context;
        if !context.is_active {
            println!(
                "[conversation {}: {}]",
                context.status.as_str(),
                context.completion_reason.as_deref().unwrap_or("-")
            );
        }
        self.context = Some(context);
        result.restart
    }

    fn show(&mut self, send: &Outgoing) {
        let framed = |header: &Option<String>, body: &str, footer: &Option<String>| {
            if let Some(h) = header {
                println!("bot> *{h}*");
            }
            println!("bot> {}", body.replace('\n', "\n     "));
            if let Some(f) = footer {
                println!("     _{f}_");
            }
        };
        match send {
            Outgoing::Text { body } => {
                println!("bot> {}", body.replace('\n', "\n     "));
            }
            Outgoing::Buttons {
                header,
                body,
                footer,
                buttons,
            } => {
                framed(header, body, footer);
                self.choices = buttons.iter().map(|b| (b.id.clone(), false)).collect();
                for (i, b) in buttons.iter().enumerate() {
                    println!("     [{}] {} ({})", i + 1, b.title, b.id);
                }
            }
            Outgoing::List {
                header,
                body,
                footer,
                button,
                sections,
            } => {
                framed(header, body, footer);
                println!("     ≡ {button}");
                self.choices.clear();
                for section in sections {
                    if !section.title.is_empty() {
                        println!("     {}", section.title);
                    }
                    for row in &section.rows {
                        self.choices.push((row.id.clone(), true));
                        let description = row
                            .description
                            .as_deref()
                            .map(|d| format!(" — {d}"))
                            .unwrap_or_default();
                        println!(
                            "     [{}] {}{description} ({})",
                            self.choices.len(),
                            row.title,
                            row.id
                        );
                    }
                }
            }
            Outgoing::Flow {
                header,
                body,
                footer,
                flow_id,
                flow_cta,
                flow_action,
                screen,
                data,
                ..
            } => {
                framed(header, body, footer);
                println!(
                    "     [Flow {flow_id}: \"{flow_cta}\", {}, screen {}, data {}] answer with /flow {{...}}",
                    match flow_action {
                        FlowAction::Navigate => "navigate",
                        FlowAction::DataExchange => "data_exchange",
                    },
                    screen.as_deref().unwrap_or("-"),
                    data.as_ref().map(Value::to_string).unwrap_or_else(|| "-".into())
                );
            }
            Outgoing::Media {
                media,
                link,
                id,
                caption,
                filename,
            } => {
                let source = link.as_deref().or(id.as_deref()).unwrap_or_default();
                let mut line = format!("bot> [{}] {source}", media.as_str());
                for extra in [filename, caption].into_iter().flatten() {
                    line.push_str(" · ");
                    line.push_str(extra);
                }
                println!("{line}");
            }
            Outgoing::CtaUrl {
                header,
                body,
                footer,
                button,
                url,
            } => {
                framed(header, body, footer);
                println!("     [{button}] → {url}");
            }
            Outgoing::LocationRequest { body } => {
                println!("bot> {}", body.replace('\n', "\n     "));
                println!("     [Send location] answer with /location LAT LNG [NAME]");
            }
            Outgoing::Template {
                name,
                language,
                parameters,
            } => {
                println!("bot> [template {name} ({language})]");
                for (k, v) in parameters {
                    println!("     {k}: {v}");
                }
            }
        }
    }
}
