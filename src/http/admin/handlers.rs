//! The `/v1` handlers: scope, request, one `service` call, answer.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::body::Json;
use super::problem::Problem;
use super::AdminState;
use crate::replay::{DryRun, DryRunHttp, Selection};
use crate::service::campaigns::{self, CampaignError, Control};
use crate::service::conversations::{self, Target};
use crate::service::tokens::Scope;
use crate::service::{chatbots, customers, messages, status as status_report, templates, webhooks};
use crate::store;
use crate::store::replay::EventFilter;
use crate::worker::proactive::SendError;
use crate::worker::templates::TemplateError;

type Answer = Result<Response, Problem>;

fn ok(value: impl serde::Serialize) -> Answer {
    Ok(axum::Json(value).into_response())
}

fn created(value: impl serde::Serialize) -> Answer {
    Ok((StatusCode::CREATED, axum::Json(value)).into_response())
}

/// A query string, its errors naming the parameter.
fn query<T: serde::de::DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, Problem> {
    q.map(|Query(q)| q).map_err(|e| {
        let text = e.body_text();
        let field = text
            .split_once(": ")
            .map(|(_, rest)| rest)
            .and_then(|rest| rest.split_once('`').and_then(|(_, r)| r.split_once('`')))
            .map(|(name, _)| name.to_owned())
            .unwrap_or_else(|| "query".to_owned());
        Problem::invalid(&field, text)
    })
}

fn target(who: &str) -> Result<Target, Problem> {
    Target::parse(who).map_err(|e| Problem::invalid("who", e.to_string()))
}

fn phone(p: &str) -> Result<String, Problem> {
    match Target::parse(p) {
        Ok(Target::Phone(p) | Target::Bsuid(p)) => Ok(p),
        _ => Err(Problem::invalid(
            "phone",
            format!("`{p}` is not a phone number or a BSUID"),
        )),
    }
}

/// The OpenAPI document of this API (no token needed).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn openapi_json() -> Response {
    axum::Json(super::openapi()).into_response()
}

/// What `wabot status` shows, as JSON.
#[utoipa::path(get, path = "/v1/status", tag = "status", security(("bearer" = [])),
    responses(
        (status = 200, description = "The status report", body = Object),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn status(State(s): State<AdminState>, caller: Caller) -> Answer {
    caller.need(Scope::Read)?;
    ok(status_report::report(&s.ctx.pool, &s.ctx.config).await?)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `waiting` (for an agent), `paused`, `agent` (an agent has it) or `active` (a
    /// chatbot run is active).
    pub state: Option<String>,
    /// The customer's phone number.
    pub customer: Option<String>,
    /// At most this many (1-500, default 50).
    pub limit: Option<i64>,
}

/// Conversations, most recently active first.
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Conversations", body = Vec<store::api::ConversationListed>),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn list_conversations(
    State(s): State<AdminState>,
    caller: Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    caller.need(Scope::Read)?;
    let q = query(q)?;
    let (handover, active) = match q.state.as_deref() {
        None => (None, false),
        Some("waiting") => (Some("requested"), false),
        Some("paused") => (Some("paused"), false),
        Some("agent") => (Some("agent"), false),
        Some("active") => (None, true),
        Some(other) => {
            return Err(Problem::invalid(
                "state",
                format!("`{other}` is not waiting, paused, agent or active"),
            ))
        }
    };
    let customer = q.customer.as_deref().map(phone).transpose()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Problem::invalid("limit", "must be 1 to 500"));
    }
    ok(conversations::list(&s.ctx.pool, handover, active, customer.as_deref(), limit).await?)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TranscriptQuery {
    /// Only the most recent N items.
    pub limit: Option<usize>,
}

/// A conversation's transcript: what `wabot conversation show --json` prints.
#[utoipa::path(get, path = "/v1/conversations/{who}", tag = "conversations",
    params(("who" = String, Path, description = "A conversation id, or the customer's phone number (their most recent conversation)"), TranscriptQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The transcript", body = Object),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub async fn transcript(
    State(s): State<AdminState>,
    caller: Caller,
    Path(who): Path<String>,
    q: Result<Query<TranscriptQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    caller.need(Scope::Read)?;
    let q = query(q)?;
    ok(conversations::show(&s.ctx.pool, &target(&who)?, q.limit).await?)
}

/// Pauses the bot in a conversation (an agent takes it) until `resume`.
#[utoipa::path(post, path = "/v1/conversations/{who}/pause", tag = "conversations",
    params(("who" = String, Path, description = "A conversation id or a phone number")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Paused; `was` is the state it replaced", body = Object),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub async fn pause(State(s): State<AdminState>, caller: Caller, Path(who): Path<String>) -> Answer {
    caller.need(Scope::Manage)?;
    let (c, was) = conversations::pause(&s.ctx.pool, &target(&who)?, s.ctx.events.get()).await?;
    ok(json!({"conversation_id": c.id, "state": "paused", "was": was}))
}

/// Gives a conversation back to the bot: the customer's next message starts it afresh.
#[utoipa::path(post, path = "/v1/conversations/{who}/resume", tag = "conversations",
    params(("who" = String, Path, description = "A conversation id or a phone number")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Resumed (`was` null: the bot had it already)", body = Object),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub async fn resume(
    State(s): State<AdminState>,
    caller: Caller,
    Path(who): Path<String>,
) -> Answer {
    caller.need(Scope::Manage)?;
    let (c, was) = conversations::resume(&s.ctx.pool, &target(&who)?, s.ctx.events.get()).await?;
    ok(json!({"conversation_id": c.id, "state": "released", "was": was}))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BusinessBody {
    /// The business number; by default every one that applies.
    pub business_phone_number_id: Option<String>,
}

/// Opts a customer out of the messages the business starts.
#[utoipa::path(post, path = "/v1/customers/{phone}/opt-out", tag = "customers",
    params(("phone" = String, Path, description = "The customer's phone number")),
    request_body(content = Option<BusinessBody>, description = "Optional: the business number"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One change per business number", body = Vec<customers::Change>),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn opt_out(
    State(s): State<AdminState>,
    caller: Caller,
    Path(p): Path<String>,
    Json(body): Json<BusinessBody>,
) -> Answer {
    caller.need(Scope::Manage)?;
    let p = phone(&p)?;
    let business = body.business_phone_number_id.as_deref();
    let changes = customers::opt_out(&s.ctx.pool, &s.ctx.config, &p, business, s.ctx.events.get())
        .await
        .map_err(business_problem)?;
    ok(changes)
}

/// Opts a customer in again.
#[utoipa::path(post, path = "/v1/customers/{phone}/opt-in", tag = "customers",
    params(("phone" = String, Path, description = "The customer's phone number")),
    request_body(content = Option<BusinessBody>, description = "Optional: the business number"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One change per business number", body = Vec<customers::Change>),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn opt_in(
    State(s): State<AdminState>,
    caller: Caller,
    Path(p): Path<String>,
    Json(body): Json<BusinessBody>,
) -> Answer {
    caller.need(Scope::Manage)?;
    let p = phone(&p)?;
    let business = body.business_phone_number_id.as_deref();
    let changes = customers::opt_in(&s.ctx.pool, &s.ctx.config, &p, business, s.ctx.events.get())
        .await
        .map_err(business_problem)?;
    ok(changes)
}

/// A business number that is not one is the caller's mistake, the rest ours.
fn business_problem(e: anyhow::Error) -> Problem {
    let text = e.to_string();
    if text.starts_with("business `") {
        return Problem::invalid("business_phone_number_id", text);
    }
    if text.contains("no business number is configured") {
        return Problem::invalid("business_phone_number_id", text);
    }
    Problem::from(e)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    /// The chatbot document: `{name, nodes, edges}` or WhatsApp Builder's export.
    #[schema(value_type = Object)]
    pub chatbot: Value,
    /// Make it active at once.
    #[serde(default)]
    pub activate: bool,
}

/// Stores a chatbot that compiles (`wabot chatbot import`).
#[utoipa::path(post, path = "/v1/chatbots", tag = "chatbots", request_body = ImportBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Stored: `{id}`", body = Object),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, description = "Not a chatbot, or it has errors (each named)", body = Problem)))]
pub async fn import_chatbot(
    State(s): State<AdminState>,
    caller: Caller,
    Json(body): Json<ImportBody>,
) -> Answer {
    caller.need(Scope::Manage)?;
    let doc = chatbots::parse(&body.chatbot)
        .map_err(|e| Problem::invalid("chatbot", format!("{e:#}")))?;
    match chatbots::import(&s.ctx.pool, &doc, body.activate).await? {
        Ok(id) => created(json!({"id": id, "active": body.activate})),
        Err(errors) => {
            let mut p = Problem::invalid("chatbot", format!("{} errors", errors.len()));
            p.detail = format!(
                "the chatbot has errors; not imported: {}",
                errors.join("; ")
            );
            p.errors = errors
                .into_iter()
                .map(|detail| super::problem::FieldError {
                    field: "chatbot".to_owned(),
                    detail,
                })
                .collect();
            Err(p)
        }
    }
}

/// Compiles a chatbot document and reports every error and warning
/// (`wabot chatbot validate`); stores nothing.
#[utoipa::path(post, path = "/v1/chatbots/validate", tag = "chatbots",
    request_body(content = Object, description = "The chatbot document"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The report (`ok` false: it has errors)", body = chatbots::Report),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn validate_chatbot(caller: Caller, Json(doc): Json<Value>) -> Answer {
    caller.need(Scope::Read)?;
    ok(chatbots::validate(&doc))
}

/// Makes a stored chatbot active.
#[utoipa::path(post, path = "/v1/chatbots/{id}/activate", tag = "chatbots",
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 200, body = Object), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn activate_chatbot(
    State(s): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    caller.need(Scope::Manage)?;
    let id = uuid(&id)?;
    chatbots::set_active(&s.ctx.pool, id, true).await?;
    ok(json!({"id": id, "active": true}))
}

/// Makes a stored chatbot inactive.
#[utoipa::path(post, path = "/v1/chatbots/{id}/deactivate", tag = "chatbots",
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 200, body = Object), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn deactivate_chatbot(
    State(s): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    caller.need(Scope::Manage)?;
    let id = uuid(&id)?;
    chatbots::set_active(&s.ctx.pool, id, false).await?;
    ok(json!({"id": id, "active": false}))
}

/// The versions of a chatbot that conversations ran on (`wabot chatbot versions`).
#[utoipa::path(get, path = "/v1/chatbots/{id}/versions", tag = "chatbots",
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 200, body = chatbots::Versions), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn chatbot_versions(
    State(s): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    caller.need(Scope::Read)?;
    ok(chatbots::versions(&s.ctx.pool, uuid(&id)?).await?)
}

fn uuid(id: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(id.trim()).map_err(|_| Problem::invalid("id", format!("`{id}` is not a uuid")))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// The chatbot document to answer with.
    #[schema(value_type = Object)]
    pub chatbot: Value,
    /// Stored webhooks received at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Stored webhooks received before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only this customer's traffic.
    pub customer: Option<String>,
    /// At most this many stored webhooks (default 1000, at most 10000).
    pub limit: Option<u64>,
}

/// Runs stored traffic through a chatbot alone and compares its answers with the
/// ones sent (`wabot replay --dry-run`); writes nothing, makes no HTTP calls.
#[utoipa::path(post, path = "/v1/replay", tag = "chatbots", request_body = ReplayBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every exchange and a summary", body = Object),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn replay(
    State(s): State<AdminState>,
    caller: Caller,
    Json(body): Json<ReplayBody>,
) -> Answer {
    caller.need(Scope::Manage)?;
    let doc = chatbots::parse(&body.chatbot)
        .map_err(|e| Problem::invalid("chatbot", format!("{e:#}")))?;
    let (bot, _) = crate::engine::compile(&doc).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        Problem::invalid("chatbot", format!("does not compile: {}", list.join("; ")))
    })?;
    if let (Some(a), Some(b)) = (body.since, body.until) {
        if a >= b {
            return Err(Problem::invalid("since", "must be before until"));
        }
    }
    let limit = body.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(Problem::invalid("limit", "must be 1 to 10000"));
    }
    let customer = body.customer.as_deref().map(phone).transpose()?;
    let config = &s.ctx.config;
    let credentials = s.ctx.credentials.current().await?;
    let limits =
        crate::engine::EngineLimits::from_config(&config.engine, config.datasource.max_timeout_ms);
    let rules = crate::session::Rules::new(&config.session);
    let http = DryRunHttp::Refuse;
    let run = DryRun {
        bot: &bot,
        metadata: doc.metadata.as_ref(),
        limits: &limits,
        http: &http,
        rules: &rules,
        end: body.until.unwrap_or_else(Utc::now),
    };
    let selection = Selection {
        filter: EventFilter {
            since: body.since,
            until: body.until,
            customer,
        },
        limit: Some(limit),
    };
    let report = crate::replay::dry_run(
        &s.ctx.pool,
        &selection,
        credentials.phone_number_id.as_deref(),
        &run,
    )
    .await?;
    ok(json!({
        "chatbot": bot.name(),
        "events": report.events,
        "unreadable": report.unreadable,
        "customers": report.customers,
        "messages": report.exchanges.len(),
        "different": report.differing(),
        "exchanges": report.exchanges,
    }))
}

/// What `POST /v1/messages` takes: a free-form text, or a template (a body with
/// `template`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the document's; the handler reads the body by its `template` key
pub enum MessageBody {
    Text(messages::SendText),
    Template(messages::SendTemplate),
}

/// Sends a customer a free-form text inside the 24-hour window, or a template
/// (`wabot send`; any time, optionally placing them in a chatbot), through the
/// send queue every reply takes. With `Idempotency-Key`, a retried request sends
/// once and gets the first answer.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = MessageBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request send once (1-200 characters)")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Queued", body = messages::Queued),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, description = "The customer has no conversation (a text)", body = Problem),
        (status = 409, description = "The customer opted out", body = Problem),
        (status = 422, description = "A field is wrong, the window is closed (a text), or the template does not fit", body = Problem)))]
pub async fn send_message(
    State(s): State<AdminState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Answer {
    caller.need(Scope::Send)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().unwrap_or("").trim();
            if k.is_empty() || k.len() > 200 {
                return Err(Problem::invalid(
                    "Idempotency-Key",
                    "must be 1 to 200 visible ASCII characters",
                ));
            }
            Some(k.to_owned())
        }
    };
    let idempotency = key.as_deref().map(|k| (caller.token_id, k));
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let sent = if body.get("template").is_some() {
        let request: messages::SendTemplate = super::body::parse(&bytes)?;
        messages::send_template(
            &s.ctx.pool,
            &s.ctx.config,
            &s.ctx.credentials,
            &request,
            idempotency,
        )
        .await
        .map_err(template_problem)?
    } else {
        let request: messages::SendText = super::body::parse(&bytes)?;
        messages::send_text(&s.ctx.pool, &request, idempotency).await?
    };
    let mut response = (StatusCode::ACCEPTED, axum::Json(&sent.queued)).into_response();
    if sent.repeated {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// A refused template send: the caller's mistakes named by field.
fn template_problem(e: messages::TemplateRefused) -> Problem {
    match e {
        messages::TemplateRefused::Refused(r) => Problem::from(r),
        messages::TemplateRefused::Send(e) => send_problem(e, "template"),
    }
}

fn send_problem(e: SendError, template_field: &str) -> Problem {
    let text = e.to_string();
    match e {
        SendError::Recipient(_) => Problem::invalid("to", text),
        SendError::OptedOut(..) => Problem::new(StatusCode::CONFLICT, "opted-out", text),
        SendError::Template(TemplateError::Database(e)) => Problem::from(e),
        SendError::Template(_) => Problem::invalid(template_field, text),
        SendError::Chatbot(_) => Problem::invalid("placement", text),
        e => Problem::from(anyhow::Error::new(e)),
    }
}

/// The synced message templates (`wabot templates list`).
#[utoipa::path(get, path = "/v1/templates", tag = "templates", security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<templates::TemplateInfo>),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list_templates(State(s): State<AdminState>, caller: Caller) -> Answer {
    caller.need(Scope::Read)?;
    ok(templates::list(&s.ctx.pool).await?)
}

/// Reads the business account's templates from Meta into the catalogue
/// (`wabot templates sync`).
#[utoipa::path(post, path = "/v1/templates/sync", tag = "templates", security(("bearer" = [])),
    responses(
        (status = 200, description = "`{listed, deleted}`", body = Object),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 502, description = "Meta's Graph API refused or did not answer", body = Problem)))]
pub async fn sync_templates(State(s): State<AdminState>, caller: Caller) -> Answer {
    caller.need(Scope::Manage)?;
    let report = crate::worker::templates::sync(&s.ctx.pool, &s.ctx.graph, &s.ctx.credentials)
        .await
        .map_err(|e| {
            if e.chain().any(|c| c.downcast_ref::<sqlx::Error>().is_some()) {
                return Problem::from(e);
            }
            Problem::new(StatusCode::BAD_GATEWAY, "graph", format!("{e:#}"))
        })?;
    ok(json!({"listed": report.listed, "deleted": report.deleted}))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignBody {
    /// The template's name (`GET /v1/templates`).
    pub template: String,
    /// Its language; needed when it has several.
    pub language: Option<String>,
    /// Who gets it, each with the template's parameters. Every one is checked
    /// before anything is stored; one listed twice is sent once.
    pub recipients: Vec<campaigns::Recipient>,
    /// Place each recipient in this chatbot: their reply continues there.
    pub placement: Option<messages::PlacementBody>,
    /// Messages per second, at most (default 20).
    pub rate: Option<f64>,
}

fn campaign_problem(e: CampaignError) -> Problem {
    let text = e.to_string();
    match e {
        CampaignError::Invalid(field, why) => Problem::invalid(field, why),
        CampaignError::Recipients(problems) => {
            let mut p = Problem::invalid("recipients", text);
            p.errors = problems
                .into_iter()
                .map(|detail| super::problem::FieldError {
                    field: "recipients".to_owned(),
                    detail,
                })
                .collect();
            p
        }
        CampaignError::NotFound(_) => Problem::not_found(text),
        CampaignError::State { .. } => Problem::new(StatusCode::CONFLICT, "state", text),
        CampaignError::Send(e) => send_problem(e, "template"),
        CampaignError::Database(e) => Problem::from(e),
    }
}

/// Starts a campaign: a template sent to a list of customers by the campaign
/// stage, paced (`wabot campaign start`, its recipients as JSON instead of CSV).
#[utoipa::path(post, path = "/v1/campaigns", tag = "campaigns", request_body = CampaignBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Stored and running", body = campaigns::Started),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, description = "A field or recipient is wrong (each named); nothing stored", body = Problem)))]
pub async fn start_campaign(
    State(s): State<AdminState>,
    caller: Caller,
    Json(body): Json<CampaignBody>,
) -> Answer {
    caller.need(Scope::Send)?;
    let start = campaigns::Start {
        template: body.template,
        language: body.language,
        placement: body.placement.map(|p| crate::worker::proactive::Placement {
            chatbot_id: p.chatbot_id,
            node: p.node,
        }),
        rate: body.rate.unwrap_or(campaigns::DEFAULT_RATE),
    };
    let pool = &s.ctx.pool;
    let checked = campaigns::check(pool, &s.ctx.config, start)
        .await
        .map_err(campaign_problem)?;
    let (recipients, problems) = campaigns::recipients_from_list(&body.recipients, &checked.params);
    let started = campaigns::create(pool, &s.ctx.credentials, checked, recipients, problems)
        .await
        .map_err(campaign_problem)?;
    s.ctx.wake.campaigns.notify_one();
    created(started)
}

/// Every campaign, newest first (`wabot campaign list`).
#[utoipa::path(get, path = "/v1/campaigns", tag = "campaigns", security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<campaigns::Summary>),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list_campaigns(State(s): State<AdminState>, caller: Caller) -> Answer {
    caller.need(Scope::Read)?;
    ok(campaigns::list(&s.ctx.pool).await?)
}

fn campaign_id(id: &str) -> Result<i64, Problem> {
    id.trim()
        .parse()
        .map_err(|_| Problem::invalid("id", format!("`{id}` is not a campaign id")))
}

/// A campaign's state and figures (`wabot campaign status`).
#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "campaigns",
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses(
        (status = 200, body = campaigns::Status), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn campaign_status(
    State(s): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    caller.need(Scope::Read)?;
    let id = campaign_id(&id)?;
    ok(campaigns::status(&s.ctx.pool, id)
        .await
        .map_err(campaign_problem)?)
}

async fn control_campaign(s: &AdminState, caller: &Caller, id: &str, what: Control) -> Answer {
    caller.need(Scope::Manage)?;
    let id = campaign_id(id)?;
    campaigns::control(&s.ctx.pool, id, what)
        .await
        .map_err(campaign_problem)?;
    s.ctx.wake.campaigns.notify_one();
    ok(campaigns::status(&s.ctx.pool, id)
        .await
        .map_err(campaign_problem)?)
}

/// Stops queueing the campaign's sends (the ones queued still go).
#[utoipa::path(post, path = "/v1/campaigns/{id}/pause", tag = "campaigns",
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses(
        (status = 200, body = campaigns::Status), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Not running", body = Problem)))]
pub async fn pause_campaign(
    State(s): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    control_campaign(&s, &caller, &id, Control::Pause).await
}

/// Queues the campaign's sends again after a pause (an operator's, or Meta's
/// messaging limit).
#[utoipa::path(post, path = "/v1/campaigns/{id}/resume", tag = "campaigns",
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses(
        (status = 200, body = campaigns::Status), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Not paused", body = Problem)))]
pub async fn resume_campaign(
    State(s): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    control_campaign(&s, &caller, &id, Control::Resume).await
}

/// Ends the campaign: no more sends are queued.
#[utoipa::path(post, path = "/v1/campaigns/{id}/cancel", tag = "campaigns",
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses(
        (status = 200, body = campaigns::Status), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Finished or cancelled already", body = Problem)))]
pub async fn cancel_campaign(
    State(s): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    control_campaign(&s, &caller, &id, Control::Cancel).await
}

/// Event endpoints with their pending and failed events.
#[utoipa::path(get, path = "/v1/webhooks", tag = "events", security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<store::events::Endpoint>),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list_webhooks(State(s): State<AdminState>, caller: Caller) -> Answer {
    caller.need(Scope::Manage)?;
    ok(webhooks::list(&s.ctx.pool).await?)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    /// Where events are posted (http or https).
    pub url: String,
    /// The event types it takes, or `["*"]` for all.
    pub events: Vec<String>,
    pub description: Option<String>,
}

/// Registers an event endpoint; the answer holds its signing secret (shown once).
#[utoipa::path(post, path = "/v1/webhooks", tag = "events", request_body = WebhookBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "`{endpoint, secret}`", body = Object),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn add_webhook(
    State(s): State<AdminState>,
    caller: Caller,
    Json(body): Json<WebhookBody>,
) -> Answer {
    caller.need(Scope::Manage)?;
    let (endpoint, secret) = webhooks::add(
        &s.ctx.pool,
        &s.ctx.config,
        &body.url,
        &body.events,
        body.description.as_deref(),
    )
    .await?
    .map_err(|e| Problem::from_invalid(&e))?;
    // This process writes the new endpoint's events from now on.
    s.ctx.events.refresh(&s.ctx.pool).await?;
    created(json!({"endpoint": endpoint, "secret": secret}))
}

/// Removes an event endpoint and its undelivered events.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "events",
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 204), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn remove_webhook(
    State(s): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    caller.need(Scope::Manage)?;
    let id = uuid(&id)?;
    if !webhooks::remove(&s.ctx.pool, id).await? {
        return Err(Problem::not_found(format!("no endpoint {id}")));
    }
    s.ctx.events.refresh(&s.ctx.pool).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Only this endpoint's.
    pub endpoint: Option<Uuid>,
    /// `pending`, `delivered` or `failed`.
    pub state: Option<String>,
    /// At most this many (1-1000, default 50).
    pub limit: Option<i64>,
}

/// The latest event deliveries, newest first (`wabot webhook deliveries`).
#[utoipa::path(get, path = "/v1/webhooks/deliveries", tag = "events", params(DeliveriesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<store::events::Delivery>),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn deliveries(
    State(s): State<AdminState>,
    caller: Caller,
    q: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    caller.need(Scope::Manage)?;
    let q = query(q)?;
    if let Some(state) = q.state.as_deref() {
        if !matches!(state, "pending" | "delivered" | "failed") {
            return Err(Problem::invalid(
                "state",
                format!("`{state}` is not pending, delivered or failed"),
            ));
        }
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::invalid("limit", "must be 1 to 1000"));
    }
    ok(webhooks::deliveries(&s.ctx.pool, q.endpoint, q.state.as_deref(), limit).await?)
}

/// Queues a delivery again (failed, or delivered and wanted again).
#[utoipa::path(post, path = "/v1/webhooks/deliveries/{id}/resend", tag = "events",
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses(
        (status = 202, body = Object), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn resend_delivery(
    State(s): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    caller.need(Scope::Manage)?;
    let id: i64 = id
        .trim()
        .parse()
        .map_err(|_| Problem::invalid("id", format!("`{id}` is not a delivery id")))?;
    let queued = webhooks::resend(&s.ctx.pool, &[id], None).await?;
    if queued.is_empty() {
        return Err(Problem::not_found(format!(
            "no delivery {id} that is not pending already"
        )));
    }
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"queued": queued}))).into_response())
}
