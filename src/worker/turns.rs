//! The turn worker: claims turn jobs, runs the engine, and commits each turn's
//! effects (context, outbound messages and their send jobs, timers, job done) in one
//! transaction.
//!
//! Ordering comes from the queue, not from this process: `store::turns::claim` hands
//! out only the oldest unfinished job of a conversation, so the turns of one
//! conversation never overlap, across any number of wabot processes. Different
//! conversations run in parallel, up to `worker.turn_concurrency`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::engine::cache::ChatbotCache;
use crate::engine::{
    self, CompiledChatbot, Context, Customer, EngineLimits, Event, HttpClient, HttpError,
    HttpRequest, HttpResponse, Inbound,
};
use crate::http::AppState;
use crate::store;
use crate::store::turns::{ClaimedTurn, ConversationParties};
use crate::whatsapp::webhook::{Interactive, Message, MessageKind};
use crate::worker::rest_api::ReqwestHttp;

/// A job that failed this many times is given up (logged and marked done with its
/// error), so that one poisonous message cannot stall its conversation for ever.
const MAX_TURN_ATTEMPTS: i32 = 8;

/// What one job came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnOutcome {
    /// The turn's effects are committed.
    Done { sends: usize },
    /// Nothing to run (no chatbot answers, a stale timer, ...); the job is done.
    Skipped(&'static str),
    /// Another worker took the job over; our effects were rolled back.
    LeaseLost,
    /// A transient failure; the job runs again later.
    Retry(String),
}

/// Runs turns for one process.
pub struct TurnWorker {
    state: AppState,
    /// This process's lease token.
    token: String,
    http: TurnHttp,
    cache: ChatbotCache,
    limits: EngineLimits,
}

impl TurnWorker {
    pub fn new(state: AppState) -> anyhow::Result<TurnWorker> {
        let config = &state.config;
        Ok(TurnWorker {
            token: format!("turns-{}", Uuid::new_v4()),
            http: TurnHttp {
                rest: ReqwestHttp::new(config)?,
                pool: state.pool.clone(),
                datasources: state.datasources.clone(),
            },
            cache: ChatbotCache::new(config.engine.chatbot_cache_size),
            limits: EngineLimits::from_config(&config.engine, config.datasource.max_timeout_ms),
            state,
        })
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.state.config.worker.lease_secs)
    }

    /// Claims and runs jobs until `shutdown`, then finishes the turns in flight (they
    /// are short and bounded by their HTTP timeouts) and hands back anything else.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, shutdown: CancellationToken) {
        let limit = self.state.config.worker.turn_concurrency;
        let permits = Arc::new(Semaphore::new(limit));
        let tasks = TaskTracker::new();
        let poll = Duration::from_millis(self.state.config.worker.poll_interval_ms);
        tracing::info!(token = %self.token, concurrency = limit, "turn worker started");
        while !shutdown.is_cancelled() {
            let free = permits.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = permits.acquire() => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let claimed =
                store::turns::claim(&self.state.pool, &self.token, self.lease(), free as i64).await;
            let jobs = match claimed {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim turn jobs");
                    Vec::new()
                }
            };
            if jobs.is_empty() {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            for job in jobs {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let worker = self.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    worker.process(job).await;
                });
            }
        }
        tasks.close();
        tasks.wait().await;
        match store::turns::release_all(&self.state.pool, &self.token).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "handed back turn jobs"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand back turn jobs; their leases will expire")
            }
        }
        tracing::info!("turn worker stopped");
    }

    /// Claims and runs at most one job now; `None` when there was none. For tests and
    /// tools that drive the worker step by step.
    pub async fn run_once(&self) -> Result<Option<TurnOutcome>, sqlx::Error> {
        let mut jobs = store::turns::claim(&self.state.pool, &self.token, self.lease(), 1).await?;
        match jobs.pop() {
            Some(job) => Ok(Some(self.process(job).await)),
            None => Ok(None),
        }
    }

    /// Runs one claimed job with a heartbeat that keeps its lease, and records the
    /// outcome.
    async fn process(&self, job: ClaimedTurn) -> TurnOutcome {
        if job.attempts > MAX_TURN_ATTEMPTS {
            // It kept failing without returning (a crash or a panic each time): give
            // it up so that the conversation's later messages are answered.
            let error = job
                .last_error
                .clone()
                .unwrap_or_else(|| "no outcome recorded".into());
            self.retry(&job, &error).await;
            return TurnOutcome::Skipped("given up after repeated attempts");
        }
        let span = tracing::info_span!("turn", job = job.id, conversation = %job.conversation_id, kind = %job.kind);
        let heartbeat = async {
            let every = self.lease() / 3;
            loop {
                tokio::time::sleep(every).await;
                match store::turns::heartbeat(&self.state.pool, job.id, &self.token, self.lease())
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => tracing::warn!(error = %e, "turn heartbeat failed"),
                }
            }
        };
        // Everything the turn logs (the engine, rest_api calls, the store) carries
        // the job and conversation.
        let outcome = tokio::select! {
            outcome = self.execute(&job).instrument(span.clone()) => outcome,
            _ = heartbeat.instrument(span) => TurnOutcome::LeaseLost,
        };
        if matches!(outcome, TurnOutcome::Done { .. } | TurnOutcome::Skipped(_)) {
            // The conversation's next job (a burst) is claimable now: claim it at
            // once rather than at the next poll.
            self.state.work_notify.notify_one();
        }
        match &outcome {
            TurnOutcome::Done { sends } => {
                tracing::debug!(job = job.id, sends, "turn done");
                if *sends > 0 {
                    self.state.send_notify.notify_one();
                }
            }
            TurnOutcome::Skipped(why) => tracing::info!(job = job.id, why, "turn skipped"),
            TurnOutcome::LeaseLost => {
                tracing::warn!(job = job.id, "turn lease lost; another worker runs it")
            }
            TurnOutcome::Retry(error) => self.retry(&job, error).await,
        }
        outcome
    }

    async fn retry(&self, job: &ClaimedTurn, error: &str) {
        if job.attempts >= MAX_TURN_ATTEMPTS {
            tracing::error!(
                job = job.id,
                attempts = job.attempts,
                error,
                "turn given up"
            );
            let note = format!("given up after {} attempts: {error}", job.attempts);
            let result = async {
                let mut tx = self.state.pool.begin().await?;
                store::turns::finish(&mut tx, job.id, &self.token, Some(&note)).await?;
                tx.commit().await
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot mark the turn given up");
            }
            return;
        }
        // 1 s, 2 s, 4 s ... capped at a minute.
        let delay = Duration::from_secs(1u64 << job.attempts.clamp(0, 6) as u32);
        tracing::warn!(job = job.id, attempts = job.attempts, error, retry_in = ?delay, "turn failed; will retry");
        let run_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        if let Err(e) =
            store::turns::retry_later(&self.state.pool, job.id, &self.token, error, run_at).await
        {
            tracing::warn!(error = %e, "cannot reschedule the turn; its lease will expire");
        }
    }

    async fn execute(&self, job: &ClaimedTurn) -> TurnOutcome {
        match self.try_execute(job).await {
            Ok(outcome) => outcome,
            Err(e) => TurnOutcome::Retry(format!("{e:#}")),
        }
    }

    async fn try_execute(&self, job: &ClaimedTurn) -> anyhow::Result<TurnOutcome> {
        let pool = &self.state.pool;
        let Some(parties) = store::turns::parties(pool, job.conversation_id).await? else {
            return self.skip(job, "the conversation has no customer").await;
        };
        let customer = Customer {
            phone: parties.customer_wa_id.clone(),
            name: Some(parties.customer_name.clone()).filter(|n| *n != parties.customer_wa_id),
        };

        let event = match job.kind.as_str() {
            "timeout" => Event::WaitTimedOut,
            "flow_failed" => Event::FlowSendFailed {
                error: job.payload["error"]["message"]
                    .as_str()
                    .or(job.payload["error"]["title"].as_str())
                    .unwrap_or("the Flow message could not be sent")
                    .to_owned(),
            },
            _ => {
                let Some(message_id) = job.message_id else {
                    return self.skip(job, "an inbound job without a message").await;
                };
                let Some(raw) = store::turns::inbound_message(pool, message_id).await? else {
                    return self.skip(job, "the message is gone").await;
                };
                inbound_from_meta(&raw).into_event()
            }
        };

        let now = Utc::now();
        let mut finished: Vec<Context> = Vec::new();
        let mut guard: Option<(Uuid, DateTime<Utc>)> = None;
        let (context, chatbot, event) =
            match store::contexts::load_active(pool, job.conversation_id).await? {
                Some(context) => {
                    let version =
                        store::turns::context_version(&mut *pool.acquire().await?, context.id)
                            .await?;
                    guard = version.map(|v| (context.id, v));
                    let current = match &event {
                        Event::WaitTimedOut => timer_matches(&job.payload, &context),
                        Event::FlowSendFailed { .. } => {
                            job.payload["flowToken"].as_str()
                                == Some(context.flow_token(&context.current_node_id).as_str())
                        }
                        _ => true,
                    };
                    if !current {
                        return self.skip(job, "the wait this job was for is over").await;
                    }
                    match self.compiled(context.chatbot_id).await? {
                        Some(bot) => (context, bot, event),
                        None => {
                            // The chatbot was deleted (its contexts cascade) or no
                            // longer compiles: nothing can answer.
                            return self.skip(job, "the context's chatbot is unusable").await;
                        }
                    }
                }
                None => {
                    let Event::InboundMessage { text, .. } = &event else {
                        return self.skip(job, "no active context").await;
                    };
                    match self
                        .start(job.conversation_id, text.as_deref(), &customer)
                        .await?
                    {
                        Some((context, bot)) => (context, bot, Event::ConversationStarted),
                        None => return self.skip(job, "no active chatbot answers").await,
                    }
                }
            };

        let mut result =
            engine::run_turn(&chatbot, context, event, now, &self.http, &self.limits).await;
        let mut sends = std::mem::take(&mut result.sends);
        self.launch_flows(&chatbot, &mut sends).await?;
        let mut context = result.context;
        let mut deadline = result.wait_deadline;
        if result.restart {
            // The customer asked to start over, or came back after the context
            // ended: keep the ended context and start the chatbot afresh.
            finished.push(context);
            match self.start(job.conversation_id, None, &customer).await? {
                Some((fresh, bot)) => {
                    let mut again = engine::run_turn(
                        &bot,
                        fresh,
                        Event::ConversationStarted,
                        now,
                        &self.http,
                        &self.limits,
                    )
                    .await;
                    self.launch_flows(&bot, &mut again.sends).await?;
                    sends.append(&mut again.sends);
                    context = again.context;
                    deadline = again.wait_deadline;
                }
                None => {
                    return self
                        .commit(job, &parties, guard, &finished, None, &sends, None, now)
                        .await
                }
            }
        }
        self.commit(
            job,
            &parties,
            guard,
            &finished,
            Some(&context),
            &sends,
            deadline,
            now,
        )
        .await
    }

    /// Completes the Flow messages of a turn from their `whatsapp_flows` rows: Meta's
    /// flow id when the node names our row's uuid, and `data_exchange` for a Flow
    /// served by an endpoint unless the node's `flowMode` chose otherwise.
    async fn launch_flows(
        &self,
        bot: &CompiledChatbot,
        sends: &mut [engine::Outgoing],
    ) -> anyhow::Result<()> {
        for send in sends.iter_mut() {
            let engine::Outgoing::Flow {
                flow_id,
                flow_token,
                flow_action,
                screen,
                data,
                ..
            } = send
            else {
                continue;
            };
            let Some(row) = store::flows::load_flow(&self.state.pool, flow_id).await? else {
                continue;
            };
            if let Some(meta_id) = row.whatsapp_flow_id.as_ref().filter(|id| !id.is_empty()) {
                flow_id.clone_from(meta_id);
            }
            let mode_set = engine::context::parse_flow_token(flow_token)
                .and_then(|(_, node_id)| bot.find(node_id))
                .map(|index| match &bot.node(index).kind {
                    engine::node::NodeKind::Flow(f) => f.mode_set,
                    _ => true,
                })
                .unwrap_or(true);
            if mode_set {
                continue;
            }
            let node_data = json!({ "flowInitialScreen": screen.clone() });
            let launch = crate::datasource::flow::flow_launch(Some(&row), &node_data);
            *flow_action = launch.flow_action;
            match launch.flow_action {
                engine::FlowAction::DataExchange => {
                    // The endpoint's INIT answer brings the first screen and its data.
                    *screen = None;
                    *data = None;
                }
                engine::FlowAction::Navigate => *screen = launch.screen,
            }
        }
        Ok(())
    }

    /// Stores the turn's effects and finishes the job, all or nothing.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        job: &ClaimedTurn,
        parties: &ConversationParties,
        guard: Option<(Uuid, DateTime<Utc>)>,
        finished: &[Context],
        context: Option<&Context>,
        sends: &[engine::Outgoing],
        deadline: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<TurnOutcome> {
        let mut tx = self.state.pool.begin().await?;
        // The queue keeps a conversation's turns apart; this is the safety net for a
        // claim that raced another: a context changed since this turn loaded it means
        // another turn ran, and this one runs again on the new state.
        if let Some((id, version)) = guard {
            if store::turns::context_version(&mut tx, id).await? != Some(version) {
                tx.rollback().await?;
                return Ok(TurnOutcome::Retry(
                    "the conversation's context changed under this turn".to_owned(),
                ));
            }
        }
        for old in finished {
            store::contexts::save(&mut tx, old).await?;
        }
        store::turns::cancel_timeouts(&mut tx, job.conversation_id, job.id).await?;
        if let Some(context) = context {
            store::contexts::save(&mut tx, context).await?;
            if let Some(at) = deadline.filter(|_| context.is_active) {
                let payload = json!({
                    "contextId": context.id,
                    "nodeId": context.current_node_id,
                    "deadline": at,
                });
                store::turns::schedule_timeout(&mut tx, job.conversation_id, at, &payload).await?;
            }
        }
        for outgoing in sends {
            store::outbox::enqueue(
                &mut tx,
                job.conversation_id,
                parties.business_user_id,
                &parties.customer_wa_id,
                outgoing,
                now,
            )
            .await?;
        }
        if let Some(last) = sends.last() {
            store::turns::touch_conversation(&mut tx, job.conversation_id, preview(last), now)
                .await?;
        }
        if !store::turns::finish(&mut tx, job.id, &self.token, None).await? {
            tx.rollback().await?;
            return Ok(TurnOutcome::LeaseLost);
        }
        tx.commit().await?;
        Ok(TurnOutcome::Done { sends: sends.len() })
    }

    async fn skip(&self, job: &ClaimedTurn, why: &'static str) -> anyhow::Result<TurnOutcome> {
        let mut tx = self.state.pool.begin().await?;
        if !store::turns::finish(&mut tx, job.id, &self.token, Some(why)).await? {
            tx.rollback().await?;
            return Ok(TurnOutcome::LeaseLost);
        }
        tx.commit().await?;
        Ok(TurnOutcome::Skipped(why))
    }

    /// A new context for the chatbot that answers `text` in this conversation.
    async fn start(
        &self,
        conversation_id: Uuid,
        text: Option<&str>,
        customer: &Customer,
    ) -> anyhow::Result<Option<(Context, Arc<CompiledChatbot>)>> {
        let Some(row) = store::chatbots::pick_for_message(&self.state.pool, text).await? else {
            return Ok(None);
        };
        let Some(bot) = self.compile_row(&row) else {
            return Ok(None);
        };
        let context = Context::start(Uuid::new_v4(), conversation_id, row.id, &bot, customer);
        Ok(Some((context, bot)))
    }

    /// The compiled chatbot `id`, from the cache while its `updatedAt` is unchanged.
    async fn compiled(&self, id: Uuid) -> anyhow::Result<Option<Arc<CompiledChatbot>>> {
        if let Some(updated_at) = store::chatbots::updated_at(&self.state.pool, id).await? {
            if let Some(bot) = self.cache.get(id, updated_at) {
                return Ok(Some(bot));
            }
        }
        let Some(row) = store::chatbots::load(&self.state.pool, id).await? else {
            return Ok(None);
        };
        Ok(self.compile_row(&row))
    }

    fn compile_row(&self, row: &store::chatbots::ChatbotRow) -> Option<Arc<CompiledChatbot>> {
        if let Some(bot) = self.cache.get(row.id, row.updated_at) {
            return Some(bot);
        }
        match engine::compile(&row.to_doc()) {
            Ok((bot, _warnings)) => {
                let bot = Arc::new(bot);
                self.cache.insert(row.id, row.updated_at, bot.clone());
                Some(bot)
            }
            Err(errors) => {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                tracing::error!(chatbot = %row.id, ?errors, "the chatbot does not compile");
                None
            }
        }
    }
}

/// The text an inbox shows for an outgoing message.
fn preview(message: &engine::Outgoing) -> &str {
    match message {
        engine::Outgoing::Text { body }
        | engine::Outgoing::Buttons { body, .. }
        | engine::Outgoing::List { body, .. }
        | engine::Outgoing::Flow { body, .. } => body,
    }
}

/// The HTTP the engine asks for during a turn: rest_api nodes go out through the
/// guarded reqwest client; `wabot-connection:<id>` requests of dynamic questions are
/// answered from the data source connection.
struct TurnHttp {
    rest: ReqwestHttp,
    pool: sqlx::PgPool,
    datasources: crate::datasource::DataSourceClient,
}

impl HttpClient for TurnHttp {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let Some(id) = request.url.strip_prefix(engine::http::CONNECTION_SCHEME) else {
            return self.rest.send(request).await;
        };
        let id = Uuid::parse_str(id)
            .map_err(|_| HttpError::InvalidRequest(format!("`{id}` is not a connection id")))?;
        let input: Value = request
            .body
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        let resolve =
            crate::datasource::resolve_connection_items(&self.pool, &self.datasources, id, &input);
        match tokio::time::timeout(request.timeout, resolve).await {
            Err(_) => Err(HttpError::Timeout),
            Ok(Err(e)) => Ok(HttpResponse {
                status: 502,
                body: e.to_string().into_bytes(),
            }),
            Ok(Ok(items)) => Ok(HttpResponse {
                status: 200,
                body: serde_json::to_vec(&items).unwrap_or_default(),
            }),
        }
    }
}

/// Whether a timer job still concerns the context's current wait.
fn timer_matches(payload: &Value, context: &Context) -> bool {
    let context_id = payload.get("contextId").and_then(Value::as_str);
    let node_id = payload.get("nodeId").and_then(Value::as_str);
    context_id == Some(context.id.to_string().as_str())
        && node_id == Some(context.current_node_id.as_str())
}

/// Meta's message as stored at ingest, reduced to what the engine reads.
pub fn inbound_from_meta(raw: &Value) -> Inbound {
    let Some(message) = Message::from_value(raw) else {
        return Inbound::Other;
    };
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    match message.kind {
        MessageKind::Text(t) => Inbound::Text {
            body: text(&t.body),
        },
        MessageKind::Interactive(Interactive::ButtonReply(b)) => Inbound::ButtonReply {
            id: text(&b.id),
            title: text(&b.title),
        },
        MessageKind::Interactive(Interactive::ListReply(l)) => Inbound::ListReply {
            id: text(&l.id),
            title: text(&l.title),
        },
        MessageKind::Interactive(Interactive::NfmReply(n)) => Inbound::FlowReply {
            response_json: n.response_json.unwrap_or_else(|| "{}".to_owned()),
        },
        MessageKind::Button(b) => Inbound::QuickReply {
            payload: b
                .payload
                .clone()
                .or_else(|| b.text.clone())
                .unwrap_or_default(),
            text: text(&b.text),
        },
        MessageKind::Image(m)
        | MessageKind::Video(m)
        | MessageKind::Document(m)
        | MessageKind::Audio(m)
        | MessageKind::Sticker(m) => Inbound::Media { caption: m.caption },
        _ => Inbound::Other,
    }
}
