//! The turn stage: leased turn jobs in, engine turns run, effects committed in
//! batches.
//!
//! Work arrives pushed, never polled: from ingest (a message whose conversation had
//! nothing older unfinished is created leased to us), from this stage's own commits
//! (a turn's commit leases its conversation's next job), and from recovery (expired
//! leases, due timers). The stage's reader takes everything waiting (up to
//! `WABOT_TURN_BATCH` and the free turn slots), reads what those turns need in one
//! query, and starts each turn on its own task: a turn that waits on a rest_api call
//! or a data source holds up nobody else. Finished turns queue for the committer,
//! which writes every turn that is ready in one transaction
//! (`store::turns::commit_batch`) and hands the committed replies to the sender.
//!
//! Ordering comes from the leases, not from this process: a conversation has at most
//! one leased job at a time, across any number of wabot processes, so its turns
//! never overlap and run in arrival order. A commit whose lease was taken over, or
//! whose context changed under it, writes nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::datasource::EngineHttp;
use crate::egress::rest_api::ReqwestHttp;
use crate::engine::cache::ChatbotCache;
use crate::engine::context::reason;
use crate::engine::{
    self, AnswerKind, CompiledChatbot, Context, ContextStatus, Customer, EngineLimits, Event,
    Inbound, MediaMessage,
};
use crate::mapping::{context_from_row, context_to_row};
use crate::metrics::TurnOutcome;
use crate::session::{self, Decision, Handover, HandoverState, Input, Rules, Skip};
use crate::store;
use crate::store::contexts::ContextRow;
use crate::store::outbox::OutboundRow;
use crate::store::turns::{
    ClaimedTurn, Committed, JobKind, PeopleChange, TurnEffects, TurnFacts, TurnLogRow,
};
use crate::store::versions::VersionRow;
use crate::whatsapp::outbound;
use crate::whatsapp::webhook::{Interactive, Media, Message, MessageKind};
use crate::worker::receipts::Receipts;
use crate::worker::sender::SendSink;
use crate::worker::{spawn_killable, AppContext, Leases};

/// A job that failed this many times is given up (logged and marked done with its
/// error), so that one poisonous message cannot stall its conversation for ever.
const MAX_TURN_ATTEMPTS: i32 = 8;

/// A turn job this process holds, with what the turn needs that the job row has.
#[derive(Debug, Clone)]
pub struct TurnWork {
    pub job_id: i64,
    pub token: String,
    pub conversation_id: Uuid,
    pub kind: JobKind,
    pub message_id: Option<Uuid>,
    /// Meta's message, for an inbound job.
    pub raw: Option<Value>,
    /// Where its media was stored, when the download finished before the turn
    /// (a claimed job; ingest pushes a job before any download).
    pub stored_media: Option<Value>,
    pub payload: Value,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// When the webhook that brought the message arrived, for a job pushed by ingest
    /// (the turn latency histogram starts there); `None` for recovered jobs.
    pub received_at: Option<DateTime<Utc>>,
}

impl TurnWork {
    /// A job ingest has just created, leased to us.
    pub fn inbound(
        job_id: i64,
        token: String,
        conversation_id: Uuid,
        message_id: Uuid,
        raw: Value,
    ) -> TurnWork {
        TurnWork {
            job_id,
            token,
            conversation_id,
            kind: JobKind::Inbound,
            message_id: Some(message_id),
            raw: Some(raw),
            stored_media: None,
            payload: Value::Null,
            attempts: 1,
            last_error: None,
            received_at: None,
        }
    }
}

impl From<ClaimedTurn> for TurnWork {
    fn from(c: ClaimedTurn) -> TurnWork {
        TurnWork {
            job_id: c.id,
            token: c.token,
            conversation_id: c.conversation_id,
            kind: c.kind,
            message_id: c.message_id,
            raw: c.raw,
            stored_media: c.stored_media,
            payload: c.payload,
            attempts: c.attempts,
            last_error: c.last_error,
            received_at: None,
        }
    }
}

/// Where leased turn jobs go: the turn stage's queue. Bounded: a full queue makes
/// the pusher (ingest, recovery) wait, which fills the ingest queue, which sheds
/// webhooks with 503.
#[derive(Clone)]
pub struct TurnSink {
    tx: mpsc::Sender<TurnWork>,
    leases: Arc<Leases>,
}

impl TurnSink {
    pub async fn push(&self, work: TurnWork) {
        self.push_all(vec![work]).await
    }

    /// Queues leased jobs in order, waiting while the queue is full. Every lease is
    /// held (renewed by the lease keeper) from the start, not from when its job gets
    /// into the queue: the last of a large batch may wait longer than a lease.
    pub async fn push_all(&self, works: Vec<TurnWork>) {
        self.leases
            .turns
            .hold_all(works.iter().map(|w| w.token.as_str()));
        let mut works = works.into_iter();
        while let Some(work) = works.next() {
            if let Err(mpsc::error::SendError(work)) = self.tx.send(work).await {
                // The stage has stopped: these leases are handed back with the
                // others, and are not ours to renew any more.
                tracing::debug!(
                    job = work.job_id,
                    "turn stage stopped; job left to its lease"
                );
                let left: Vec<TurnWork> = std::iter::once(work).chain(works).collect();
                self.leases
                    .turns
                    .release_all(left.iter().map(|w| w.token.as_str()));
                return;
            }
        }
    }
}

/// The sink and the receiving end of a new turn stage's queue.
impl TurnSink {
    /// Jobs waiting for the turn stage's reader.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

pub fn queue(ctx: &AppContext, leases: Arc<Leases>) -> (TurnSink, mpsc::Receiver<TurnWork>) {
    let (tx, rx) = mpsc::channel(ctx.config.pipeline.turn_queue.max(1));
    (TurnSink { tx, leases }, rx)
}

/// A finished turn on its way to the committer, with the slot it occupies.
struct Ready {
    work: TurnWork,
    effects: TurnEffects,
    _slot: OwnedSemaphorePermit,
    _busy: Busy,
}

/// Counts a turn from its start until its commit's follow-ups were handed on: the
/// stage is idle when none is counted.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(count: &Arc<AtomicUsize>) -> Busy {
        count.fetch_add(1, Ordering::SeqCst);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs turns for one process.
pub struct TurnStage {
    ctx: Arc<AppContext>,
    http: EngineHttp,
    /// Compiled chatbot versions, with the content of those not yet known stored.
    cache: ChatbotCache<VersionRow>,
    limits: EngineLimits,
    leases: Arc<Leases>,
    sink: TurnSink,
    sends: SendSink,
    busy: Arc<AtomicUsize>,
    /// The active chatbots, as of the version `load_batch` reported.
    candidates: std::sync::Mutex<Option<(String, Arc<Vec<store::chatbots::Candidate>>)>>,
    /// The session rules (opt-out words, the handover's idle time).
    rules: Rules,
    /// Read receipts and the typing indicator (`WABOT_MARK_READ`).
    receipts: Receipts,
}

impl TurnStage {
    pub fn new(
        ctx: Arc<AppContext>,
        leases: Arc<Leases>,
        sink: TurnSink,
        sends: SendSink,
    ) -> anyhow::Result<TurnStage> {
        let config = &ctx.config;
        Ok(TurnStage {
            http: EngineHttp {
                rest: ReqwestHttp::new(config)?,
                pool: ctx.pool.clone(),
                datasources: ctx.datasources.clone(),
            },
            cache: ChatbotCache::new(config.engine.chatbot_cache_size),
            limits: EngineLimits::from_config(&config.engine, config.datasource.max_timeout_ms),
            rules: Rules::new(&config.session),
            receipts: Receipts::new(
                ctx.graph.clone(),
                ctx.credentials.clone(),
                config.session.mark_read,
            ),
            ctx,
            leases,
            sink,
            sends,
            busy: Arc::new(AtomicUsize::new(0)),
            candidates: std::sync::Mutex::new(None),
        })
    }

    /// Reads, runs and commits turns. Once `idle` is cancelled (the drain: no more
    /// work comes from outside) it returns when its queue is empty and every turn
    /// it started is committed; `stop` cuts it short, leaving what was not started
    /// to its lease, which the pipeline hands back.
    pub async fn run(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<TurnWork>,
        idle: CancellationToken,
        stop: CancellationToken,
        kill: CancellationToken,
    ) {
        let slots = Arc::new(Semaphore::new(
            self.ctx.config.worker.turn_concurrency.max(1),
        ));
        let (ready_tx, ready_rx) = mpsc::unbounded_channel::<Ready>();
        let committer = spawn_killable(&kill, self.clone().commit_loop(ready_rx));
        let max = self.ctx.config.pipeline.turn_batch.max(1);
        tracing::info!(holder = %self.ctx.holder, "turn stage started");
        loop {
            let mut batch = Vec::new();
            let want = slots.available_permits().clamp(1, max);
            let received = tokio::select! {
                biased;
                n = rx.recv_many(&mut batch, want) => n,
                _ = stop.cancelled() => 0,
                _ = self.idle(&idle) => 0,
            };
            if received == 0 {
                break;
            }
            let mut convs: Vec<Uuid> = batch.iter().map(|w| w.conversation_id).collect();
            convs.sort();
            convs.dedup();
            let facts = match store::turns::load_batch(&self.ctx.pool, &convs).await {
                Ok(facts) => facts,
                Err(e) => {
                    tracing::warn!(error = %e, turns = batch.len(), "cannot read the turns' facts; retrying them later");
                    for work in batch {
                        self.retry(&work, &format!("cannot read the turn's facts: {e}"))
                            .await;
                    }
                    continue;
                }
            };
            self.warm_versions(&facts).await;
            for work in batch {
                let busy = Busy::new(&self.busy);
                let slot = tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    _ = stop.cancelled() => break,
                };
                let stage = self.clone();
                let facts = facts.get(&work.conversation_id).cloned();
                let ready = ready_tx.clone();
                let span = tracing::info_span!("turn", job = work.job_id,
                    conversation = %work.conversation_id, kind = work.kind.as_str(),
                    chatbot = tracing::field::Empty);
                spawn_killable(
                    &kill,
                    async move {
                        match stage.turn(&work, facts.as_ref()).await {
                            Ok(effects) => {
                                let _ = ready.send(Ready {
                                    work,
                                    effects,
                                    _slot: slot,
                                    _busy: busy,
                                });
                            }
                            Err(e) => stage.retry(&work, &format!("{e:#}")).await,
                        }
                    }
                    .instrument(span),
                );
            }
        }
        drop(ready_tx);
        // The committer ends once every started turn has been committed.
        let _ = committer.await;
        tracing::info!("turn stage stopped");
    }

    /// Resolves once `idle` is cancelled and no turn is in flight.
    async fn idle(&self, idle: &CancellationToken) {
        idle.cancelled().await;
        while self.busy.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn commit_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Ready>) {
        let max = self.ctx.config.pipeline.turn_batch.max(1);
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, max).await > 0 {
            let ready = std::mem::take(&mut batch);
            self.commit(ready).await;
        }
    }

    /// Commits a batch; on a refusal, each turn alone (a turn that cannot commit on
    /// its own is retried later).
    async fn commit(&self, ready: Vec<Ready>) {
        let effects: Vec<TurnEffects> = ready.iter().map(|r| r.effects.clone()).collect();
        let lease = self.ctx.lease();
        let started = std::time::Instant::now();
        match store::turns::commit_batch(
            &self.ctx.pool,
            &effects,
            &self.ctx.holder,
            lease,
            self.ctx.events.get(),
        )
        .await
        {
            Ok(commit) => {
                crate::metrics::turn_commit(ready.len(), started.elapsed());
                // The first reply of each turn whose webhook we saw arrive: the sender
                // measures the turn's latency when Meta accepts it.
                let mut first_replies = HashMap::new();
                let mut rerun = Vec::new();
                // Held until the follow-ups below are handed on, so that a draining
                // stage does not see itself idle in between.
                let mut busy = Vec::with_capacity(ready.len());
                for (r, verdict) in ready.into_iter().zip(commit.turns) {
                    let Ready {
                        work,
                        effects,
                        _slot,
                        _busy,
                    } = r;
                    busy.push(_busy);
                    let kind = work.kind.as_str();
                    match verdict {
                        Committed::Done => {
                            // Written with the turn: later turns need not write it.
                            for version in &effects.versions {
                                self.cache.stored(version.chatbot_id, &version.hash);
                            }
                            if effects.note.is_some() {
                                crate::metrics::turn(kind, TurnOutcome::Skipped);
                            } else {
                                crate::metrics::turn(kind, TurnOutcome::Done);
                                crate::metrics::engine_turn(
                                    effects.log.steps.max(0) as u32,
                                    effects.log.completion_reason.as_deref(),
                                );
                            }
                            if let (Some(at), Some(first)) =
                                (work.received_at, effects.sends.first())
                            {
                                first_replies.insert(first.message_id, at);
                            }
                            tracing::debug!(
                                job = work.job_id,
                                sends = effects.sends.len(),
                                note = effects.note.as_deref().unwrap_or(""),
                                "turn committed"
                            );
                            self.leases.turns.release(&work.token);
                        }
                        Committed::LeaseLost => {
                            crate::metrics::turn(kind, TurnOutcome::LeaseLost);
                            tracing::warn!(
                                job = work.job_id,
                                "turn lease lost; another worker runs it"
                            );
                            self.leases.turns.release(&work.token);
                        }
                        // Another turn changed the context first: run this one again
                        // on the new state (the lease still holds).
                        Committed::Stale => {
                            crate::metrics::turn(kind, TurnOutcome::Stale);
                            rerun.push(work)
                        }
                    }
                }
                // The slots of this batch are free now (the `Ready`s are dropped),
                // before the pushes below can wait on the queue.
                self.sends.push_replies(commit.sends, &first_replies).await;
                let next = commit.next.into_iter().map(TurnWork::from);
                self.sink
                    .push_all(rerun.into_iter().chain(next).collect())
                    .await;
                drop(busy);
            }
            Err(e) if ready.len() > 1 => {
                tracing::warn!(error = %e, turns = ready.len(), "turn batch refused; committing its turns one by one");
                for r in ready {
                    Box::pin(self.commit(vec![r])).await;
                }
            }
            Err(e) => {
                for r in ready {
                    self.retry(&r.work, &format!("cannot commit the turn: {e}"))
                        .await;
                }
            }
        }
    }

    /// Hands a failed job back to run again later (1 s, 2 s, 4 s ... capped at a
    /// minute), or gives it up after `MAX_TURN_ATTEMPTS`.
    async fn retry(&self, work: &TurnWork, error: &str) {
        self.leases.turns.release(&work.token);
        let pool = &self.ctx.pool;
        if work.attempts >= MAX_TURN_ATTEMPTS {
            tracing::error!(
                job = work.job_id,
                attempts = work.attempts,
                error,
                "turn given up"
            );
            crate::metrics::turn(work.kind.as_str(), TurnOutcome::GivenUp);
            let note = format!("given up after {} attempts: {error}", work.attempts);
            if let Err(e) = store::turns::give_up(pool, work.job_id, &work.token, &note).await {
                tracing::warn!(error = %e, "cannot mark the turn given up");
            }
            return;
        }
        crate::metrics::turn(work.kind.as_str(), TurnOutcome::Retried);
        let delay = Duration::from_secs(1u64 << work.attempts.clamp(0, 6) as u32);
        tracing::warn!(job = work.job_id, attempts = work.attempts, error, retry_in = ?delay, "turn failed; will retry");
        let run_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        if let Err(e) =
            store::turns::retry_later(pool, work.job_id, &work.token, error, run_at).await
        {
            tracing::warn!(error = %e, "cannot reschedule the turn; its lease will expire");
        }
    }

    /// Runs one turn: what it writes, or an error to retry it for. The session
    /// rules (`crate::session`) decide what the event does; this adapter reads their
    /// inputs from the batch's facts and carries out the decision.
    async fn turn(
        &self,
        work: &TurnWork,
        facts: Option<&TurnFacts>,
    ) -> anyhow::Result<TurnEffects> {
        let mut effects = TurnEffects {
            job_id: work.job_id,
            token: work.token.clone(),
            conversation_id: work.conversation_id,
            guard: None,
            handover_seen: facts.and_then(|f| f.handover.clone()),
            contexts: Vec::new(),
            versions: Vec::new(),
            timer: None,
            sends: Vec::new(),
            preview: None,
            note: None,
            people: Vec::new(),
            log: TurnLogRow {
                kind: work.kind.as_str().to_owned(),
                message_id: work.message_id,
                ..TurnLogRow::default()
            },
        };
        let skip = |mut effects: TurnEffects, why: Skip, detail: Option<&str>| {
            let note = match detail {
                Some(detail) => format!("{}: {detail}", why.note()),
                None => why.note().to_owned(),
            };
            tracing::info!(job = work.job_id, why = why.code(), "turn skipped");
            effects.note = Some(note);
            Ok(effects)
        };
        if work.attempts > MAX_TURN_ATTEMPTS {
            // It kept failing without returning (a crash each time): give it up so
            // that the conversation's later messages are answered.
            let error = work.last_error.as_deref().unwrap_or("no outcome recorded");
            return skip(effects, Skip::GivenUp, Some(error));
        }
        let Some(facts) = facts else {
            return skip(effects, Skip::NoCustomer, None);
        };
        // A name that is only the customer's number or BSUID (no profile name) is none.
        let customer = Customer {
            phone: facts.customer_phone.clone().unwrap_or_default(),
            name: Some(facts.customer_name.clone()).filter(|n| {
                *n != facts.customer_wa_id
                    && Some(n) != facts.customer_phone.as_ref()
                    && Some(n) != facts.customer_bsuid.as_ref()
            }),
            username: facts.customer_username.clone(),
            id: facts.customer_bsuid.clone(),
        };
        let event = match work.kind {
            JobKind::Timeout => Event::WaitTimedOut,
            JobKind::FlowFailed => Event::FlowSendFailed {
                error: work.payload["error"]["message"]
                    .as_str()
                    .or(work.payload["error"]["title"].as_str())
                    .unwrap_or("the Flow message could not be sent")
                    .to_owned(),
            },
            JobKind::Inbound => match &work.raw {
                Some(raw) => inbound_from_meta(raw)
                    .with_stored(work.stored_media.clone())
                    .into_event(),
                None => return skip(effects, Skip::MessageGone, None),
            },
        };

        let now = Utc::now();
        let context = facts.context.as_ref().map(|row| {
            effects.guard = Some((row.id, row.updated_at));
            context_from_row(row)
        });
        let input = match &event {
            Event::WaitTimedOut => Input::Timer {
                current: context
                    .as_ref()
                    .is_some_and(|c| timer_matches(&work.payload, c)),
            },
            Event::FlowSendFailed { .. } => Input::Timer {
                current: context.as_ref().is_some_and(|c| {
                    work.payload["flowToken"].as_str()
                        == Some(c.flow_token(&c.current_node_id).as_str())
                }),
            },
            _ => Input::Message(&event),
        };
        let state = session::State {
            has_context: context.is_some(),
            handover: facts.handover.as_ref().and_then(|(state, at)| {
                Some(Handover {
                    state: HandoverState::parse(state)?,
                    last_agent_at: *at,
                })
            }),
            opted_out: facts.opted_out,
        };
        // Timers' messages are the business's; the rest answer the customer.
        let business_initiated = matches!(input, Input::Timer { .. });
        let skip_word = session::is_skip_word(input);
        let decision = session::decide(&self.rules, &state, input, now);
        if let (Input::Message(_), false) = (input, matches!(decision, Decision::Skip(_))) {
            // The bot answers this message: the customer sees it read and the bot
            // typing while the turn runs (in the background; never retried).
            if let Some(wamid) = work.raw.as_ref().and_then(|raw| raw["id"].as_str()) {
                self.receipts.mark(wamid);
            }
        }
        let (context, chatbot, event) = match decision {
            Decision::Skip(why) => return skip(effects, why, None),
            Decision::OptOut { confirm } | Decision::OptIn { confirm } => {
                let opting_out = matches!(decision, Decision::OptOut { .. });
                let word = match &event {
                    Event::InboundMessage {
                        text: Some(text), ..
                    } => text.trim().to_owned(),
                    _ => String::new(),
                };
                let (business, customer) = (
                    facts.business_phone_number_id.clone(),
                    facts.customer_wa_id.clone(),
                );
                effects.people.push(if opting_out {
                    PeopleChange::OptOut {
                        business,
                        customer,
                        word,
                    }
                } else {
                    PeopleChange::OptIn { business, customer }
                });
                // An opt-out ends the run in progress, so that no timer of it speaks.
                let ended = context.filter(|_| opting_out).map(|mut c| {
                    c.finish(ContextStatus::Completed, reason::OPTED_OUT, now);
                    c
                });
                let text = if opting_out {
                    &self.rules.opt_out_message
                } else {
                    &self.rules.opt_in_message
                };
                let sends: Vec<engine::Outgoing> = if confirm && !text.trim().is_empty() {
                    vec![engine::Outgoing::Text { body: text.clone() }]
                } else {
                    Vec::new()
                };
                self.finish(&mut effects, facts, &sends, ended.as_ref(), None, false);
                return Ok(effects);
            }
            Decision::Continue => {
                let Some(mut context) = context else {
                    return skip(effects, Skip::NoActiveContext, None);
                };
                match self.context_chatbot(&mut context, facts).await? {
                    Some(bot) => (context, bot, event),
                    // The chatbot was deleted (its contexts cascade) or no longer
                    // compiles: nothing can answer.
                    None => return skip(effects, Skip::ChatbotUnusable, None),
                }
            }
            Decision::Start { release } => {
                if release {
                    effects.people.push(PeopleChange::Release);
                    if let Some(mut old) = context {
                        // The run from before the agent took over is over.
                        old.finish(ContextStatus::Stopped, reason::AGENT_TOOK_OVER, now);
                        effects.contexts.push(context_to_row(&old));
                    }
                }
                let text = match &event {
                    Event::InboundMessage { text, .. } => text.clone(),
                    _ => None,
                };
                match self
                    .start(work.conversation_id, text.as_deref(), &customer, facts)
                    .await?
                {
                    Some((context, bot)) => (context, bot, Event::ConversationStarted),
                    None => return skip(effects, Skip::NoActiveChatbot, None),
                }
            }
        };

        tracing::Span::current().record("chatbot", tracing::field::display(context.chatbot_id));
        let mut result =
            engine::run_turn(&chatbot, context, event, now, &self.http, &self.limits).await;
        effects.log.steps = result.steps as i32;
        effects.log.nodes = std::mem::take(&mut result.walked);
        let mut sends = std::mem::take(&mut result.sends);
        self.launch_flows(&chatbot, &mut sends).await?;
        let mut context = result.context;
        let mut deadline = result.wait_deadline;
        if let Some(source) = result.handover {
            effects.people.push(PeopleChange::RequestAgent { source });
        }
        if session::after_run(skip_word, result.restart, context.status) {
            // The customer asked to start over (a restart keyword), or came back
            // after the context ended: keep the ended context and start the same
            // chatbot afresh.
            let bot_id = context.chatbot_id;
            effects.contexts.push(context_to_row(&context));
            let fresh = match self.compiled(bot_id, None).await? {
                Some(bot) => Some((
                    Context::start(
                        Uuid::new_v4(),
                        work.conversation_id,
                        bot_id,
                        &bot,
                        &customer,
                    ),
                    bot,
                )),
                None => {
                    self.start(work.conversation_id, None, &customer, facts)
                        .await?
                }
            };
            let Some((fresh, bot)) = fresh else {
                self.finish(&mut effects, facts, &sends, None, None, business_initiated);
                return Ok(effects);
            };
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
            effects.log.steps += again.steps as i32;
            effects.log.nodes.append(&mut again.walked);
            context = again.context;
            deadline = again.wait_deadline;
        }
        self.finish(
            &mut effects,
            facts,
            &sends,
            Some(&context),
            deadline,
            business_initiated,
        );
        Ok(effects)
    }

    /// Fills in what the turn writes: the context, its timer, the replies.
    fn finish(
        &self,
        effects: &mut TurnEffects,
        facts: &TurnFacts,
        sends: &[engine::Outgoing],
        context: Option<&Context>,
        deadline: Option<DateTime<Utc>>,
        business_initiated: bool,
    ) {
        if let Some(context) = context {
            let row = context_to_row(context);
            let log = &mut effects.log;
            log.chatbot_id = Some(row.chatbot_id);
            log.context_id = Some(row.id);
            log.current_node_id = Some(row.current_node_id.clone());
            log.status = Some(row.status.clone());
            log.completion_reason = row.completion_reason.clone();
            log.variables = Some(row.variables.clone());
            effects.contexts.push(row);
            // A version first run by this turn is written with its contexts.
            for row in &effects.contexts {
                let Some(hash) = row_version(row) else {
                    continue;
                };
                let unstored = self
                    .cache
                    .get(row.chatbot_id, hash)
                    .and_then(|cached| cached.unstored);
                if let Some(version) = unstored {
                    let known = effects
                        .versions
                        .iter()
                        .any(|v| v.chatbot_id == version.chatbot_id && v.hash == version.hash);
                    if !known {
                        effects.versions.push(version);
                    }
                }
            }
            if let Some(at) = deadline.filter(|_| context.is_active) {
                let payload = json!({
                    "contextId": context.id,
                    "nodeId": context.current_node_id,
                    "deadline": at,
                });
                effects.timer = Some((at, payload));
            }
        }
        effects.sends = sends
            .iter()
            .map(|msg| OutboundRow {
                business_initiated,
                ..outbound_row(
                    effects.conversation_id,
                    facts.business_user_id,
                    facts.customer_address(),
                    msg,
                )
            })
            .collect();
        effects.preview = sends.last().map(|m| preview(m).to_owned());
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
            let Some(row) = store::flows::load_flow(&self.ctx.pool, flow_id).await? else {
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
            let launch = crate::datasource::flow::launch::flow_launch(Some(&row), &node_data);
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

    /// A new context for the chatbot that answers `text` in this conversation. The
    /// active chatbots are read once per version of their set, not per start.
    async fn start(
        &self,
        conversation_id: Uuid,
        text: Option<&str>,
        customer: &Customer,
        facts: &TurnFacts,
    ) -> anyhow::Result<Option<(Context, Arc<CompiledChatbot>)>> {
        let cached = self.candidates.lock().ok().and_then(|c| {
            c.as_ref()
                .filter(|(version, _)| *version == facts.active_chatbots)
                .map(|(_, list)| list.clone())
        });
        let candidates = match cached {
            Some(list) => list,
            None => {
                let list = Arc::new(store::chatbots::active_candidates(&self.ctx.pool).await?);
                if let Ok(mut c) = self.candidates.lock() {
                    *c = Some((facts.active_chatbots.clone(), list.clone()));
                }
                list
            }
        };
        let chosen = engine::compile::choose_chatbot(
            candidates.iter().map(|c| (c.id, c.metadata.as_ref())),
            text,
        );
        let Some(candidate) = chosen.and_then(|id| candidates.iter().find(|c| c.id == id)) else {
            return Ok(None);
        };
        let Some(bot) = self
            .compiled(candidate.id, Some(candidate.updated_at))
            .await?
        else {
            return Ok(None);
        };
        let context = Context::start(
            Uuid::new_v4(),
            conversation_id,
            candidate.id,
            &bot,
            customer,
        );
        Ok(Some((context, bot)))
    }

    /// The chatbot a context runs on: the version it is pinned to, whatever the
    /// editor did to the chatbot since. A context from before versions (or whose
    /// version is not stored, which maintenance never allows for a live context) is
    /// pinned to the chatbot's graph now.
    async fn context_chatbot(
        &self,
        context: &mut Context,
        facts: &TurnFacts,
    ) -> anyhow::Result<Option<Arc<CompiledChatbot>>> {
        let id = context.chatbot_id;
        if let Some(hash) = context.version() {
            if let Some(cached) = self.cache.get(id, &hash) {
                return Ok(Some(cached.chatbot));
            }
            // The batch's read (`warm_versions`) failed, or another turn's version
            // pushed this one out of the cache since.
            let key = [(id, hash.clone())];
            match store::versions::load_many(&self.ctx.pool, &key)
                .await?
                .pop()
            {
                Some(row) => return Ok(self.compile_version(row)),
                None => tracing::warn!(chatbot = %id, version = %hash,
                    "the context's chatbot version is not stored; it continues on the chatbot's graph"),
            }
        }
        let Some(bot) = self.compiled(id, facts.chatbot_updated_at).await? else {
            return Ok(None);
        };
        if let Some(version) = bot.version() {
            context.pin(version);
        }
        Ok(Some(bot))
    }

    /// Compiles, in one read for the whole batch, the versions its contexts are
    /// pinned to that the cache does not hold: none in the steady state; a version
    /// this process has not run yet (another process started its contexts, or this
    /// one restarted), or one the cache let go. A failed read is only logged: each
    /// turn then reads its own.
    async fn warm_versions(&self, facts: &HashMap<Uuid, TurnFacts>) {
        let mut missing: Vec<(Uuid, String)> = facts
            .values()
            .filter_map(|f| f.context.as_ref())
            .filter_map(|row| row_version(row).map(|hash| (row.chatbot_id, hash.to_owned())))
            .filter(|(id, hash)| self.cache.get(*id, hash).is_none())
            .collect();
        if missing.is_empty() {
            return;
        }
        missing.sort();
        missing.dedup();
        match store::versions::load_many(&self.ctx.pool, &missing).await {
            Ok(rows) => {
                for row in rows {
                    self.compile_version(row);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, versions = missing.len(), "cannot read chatbot versions")
            }
        }
    }

    /// A stored version, compiled and cached.
    fn compile_version(&self, row: VersionRow) -> Option<Arc<CompiledChatbot>> {
        let doc = engine::ChatbotDoc::from_columns(&row.name, row.nodes, row.edges, row.metadata);
        match engine::compile(&doc) {
            Ok((bot, _warnings)) => {
                let bot = Arc::new(bot.with_version(row.hash.clone()));
                self.cache
                    .insert(row.chatbot_id, &row.hash, bot.clone(), None);
                Some(bot)
            }
            Err(errors) => {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                tracing::error!(chatbot = %row.chatbot_id, version = %row.hash, ?errors,
                    "the chatbot version does not compile");
                None
            }
        }
    }

    /// The chatbot `id` as its row holds it now, compiled once per version: from the
    /// cache while its `updatedAt` (when the caller read it) is unchanged. A context
    /// started on it is pinned to its version.
    async fn compiled(
        &self,
        id: Uuid,
        updated_at: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Option<Arc<CompiledChatbot>>> {
        let updated_at = match updated_at {
            Some(at) => Some(at),
            None => store::chatbots::updated_at(&self.ctx.pool, id).await?,
        };
        if let Some(cached) = updated_at.and_then(|at| self.cache.current(id, at)) {
            return Ok(Some(cached.chatbot));
        }
        let Some(row) = store::chatbots::load(&self.ctx.pool, id).await? else {
            return Ok(None);
        };
        Ok(self.compile_row(row))
    }

    fn compile_row(&self, row: store::chatbots::ChatbotRow) -> Option<Arc<CompiledChatbot>> {
        let hash = engine::version::hash(&row.nodes, &row.edges, row.metadata.as_ref());
        // An edit that changed nothing the version covers (a rename, switching the
        // chatbot on) finds its graph compiled already.
        let bot = match self.cache.get(row.id, &hash) {
            Some(cached) => cached.chatbot,
            None => match engine::compile(&row.to_doc()) {
                Ok((bot, _warnings)) => Arc::new(bot.with_version(hash.clone())),
                Err(errors) => {
                    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    tracing::error!(chatbot = %row.id, ?errors, "the chatbot does not compile");
                    return None;
                }
            },
        };
        // Written again (or for the first time) by the next turn that pins a context
        // to it: the graph may be an old one the editor went back to, whose version
        // maintenance purged while it was not current. Once per edit and process.
        let version = VersionRow {
            chatbot_id: row.id,
            hash: hash.clone(),
            name: row.name,
            nodes: row.nodes,
            edges: row.edges,
            metadata: row.metadata,
        };
        self.cache
            .insert(row.id, &hash, bot.clone(), Some(Arc::new(version)));
        self.cache.set_current(row.id, row.updated_at, &hash);
        Some(bot)
    }
}

/// The chatbot version a context row is pinned to (`variables.__wabot.version`,
/// what `Context::version` reads), without converting the row.
fn row_version(row: &ContextRow) -> Option<&str> {
    row.variables
        .get(engine::context::STATE_KEY)?
        .get("version")?
        .as_str()
}

/// The `messages.type` and `messages.content` WhatsApp Builder stores for an outbound
/// message. Its backend stores text as `{body}` (its database design says `{text}`:
/// both keys are written, as ingest does for inbound text) and interactive messages
/// as Meta's `interactive` object (`{type, header?, body:{text}, footer?, action}`),
/// which is what its chat UI reads; a Flow also carries `whatsappFlowId`, as the
/// database design describes.
pub fn message_content(msg: &engine::Outgoing) -> (&'static str, Value) {
    match msg {
        engine::Outgoing::Text { body } => {
            let text = outbound::truncate(body, crate::engine::limits::TEXT_BODY);
            ("text", json!({ "body": text, "text": text }))
        }
        engine::Outgoing::Flow { flow_id, .. } => {
            let mut content = outbound::interactive(msg);
            content["whatsappFlowId"] = json!(flow_id);
            ("interactive", content)
        }
        engine::Outgoing::Buttons { .. }
        | engine::Outgoing::List { .. }
        | engine::Outgoing::CtaUrl { .. }
        | engine::Outgoing::LocationRequest { .. } => ("interactive", outbound::interactive(msg)),
        // Meta's media object (`link` | `id`, `caption`, `filename`), with the link
        // also under `url`, the key inbound media keep it in.
        engine::Outgoing::Template {
            name,
            language,
            parameters,
        } => {
            let text = format!("[template {name}]");
            let template = json!({"name": name, "language": {"code": language},
                                  "parameters": parameters});
            (
                "text",
                json!({ "body": text, "text": text, "template": template }),
            )
        }
        engine::Outgoing::Media { media, link, .. } => {
            let mut content = outbound::media_object(msg);
            if let Some(link) = link {
                content["url"] = json!(link);
            }
            (media.as_str(), content)
        }
    }
}

/// An engine message as the outbound row and send job that carry it: WhatsApp
/// Builder's content for the inbox, Meta's request body for the Graph API.
pub fn outbound_row(
    conversation_id: Uuid,
    business_user_id: Uuid,
    recipient: &str,
    msg: &engine::Outgoing,
) -> OutboundRow {
    let (kind, content) = message_content(msg);
    let message_id = Uuid::new_v4();
    let mut body = outbound::graph_body(recipient, msg);
    // Meta echoes it in every status webhook of the message: a `sent` that arrives
    // for a send whose outcome was never recorded (the process died during the call,
    // or the call timed out after Meta accepted it) finishes the job instead of a
    // second send.
    body[outbound::CALLBACK_DATA] = Value::String(outbound::callback_data(message_id));
    OutboundRow {
        message_id,
        conversation_id,
        sender_user_id: business_user_id,
        recipient: recipient.to_owned(),
        kind,
        content,
        body,
        business_initiated: false,
    }
}

/// The text an inbox shows for an outgoing message.
fn preview(message: &engine::Outgoing) -> &str {
    match message {
        engine::Outgoing::Media { caption: None, .. } => "📎 Media",
        other => other.text(),
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
        return Inbound::Other {
            type_name: "unreadable".to_owned(),
        };
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
        MessageKind::Image(m) => media(AnswerKind::Image, m),
        MessageKind::Video(m) => media(AnswerKind::Video, m),
        MessageKind::Document(m) => media(AnswerKind::Document, m),
        MessageKind::Audio(m) => media(AnswerKind::Audio, m),
        MessageKind::Sticker(m) => media(AnswerKind::Sticker, m),
        MessageKind::Location(l) => Inbound::Location {
            latitude: l.latitude,
            longitude: l.longitude,
            name: l.name,
            address: l.address,
        },
        // The cards as Meta sent them: every field Meta may add is kept.
        MessageKind::Contacts(_) => Inbound::Contacts {
            contacts: raw.get("contacts").cloned().unwrap_or(Value::Null),
        },
        MessageKind::Unknown { type_name } => Inbound::Other { type_name },
        // What Meta could not deliver, by its inner type (`unsupported.poll`).
        MessageKind::Unsupported(u) => Inbound::Other {
            type_name: match u.kind.filter(|k| !k.trim().is_empty()) {
                Some(kind) => format!("unsupported.{kind}"),
                None => "unsupported".to_owned(),
            },
        },
        MessageKind::Interactive(Interactive::Other { type_name, .. }) => Inbound::Other {
            type_name: format!("interactive.{type_name}"),
        },
        other => Inbound::Other {
            type_name: other.db_type().to_owned(),
        },
    }
}

fn media(kind: AnswerKind, m: Media) -> Inbound {
    Inbound::Media(MediaMessage {
        kind,
        caption: m.caption,
        mime_type: m.mime_type,
        media_id: m.id,
        sha256: m.sha256,
        filename: m.filename,
        voice: m.voice,
        stored: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Choice, FlowAction, Outgoing};
    use serde_json::Map;

    #[test]
    fn contents_have_whatsapp_builders_shapes() {
        let (kind, content) = message_content(&Outgoing::Text {
            body: "Merhaba".into(),
        });
        assert_eq!(kind, "text");
        assert_eq!(content, json!({"body": "Merhaba", "text": "Merhaba"}));

        let (kind, content) = message_content(&Outgoing::Buttons {
            header: None,
            body: "Seçin".into(),
            footer: Some("alt".into()),
            buttons: vec![Choice {
                id: "btn-0".into(),
                title: "Evet".into(),
                description: None,
            }],
        });
        assert_eq!(kind, "interactive");
        assert_eq!(
            content,
            json!({"type": "button", "body": {"text": "Seçin"}, "footer": {"text": "alt"},
                   "action": {"buttons": [{"type": "reply", "reply": {"id": "btn-0", "title": "Evet"}}]}})
        );

        let (kind, content) = message_content(&Outgoing::Flow {
            header: None,
            body: "Form".into(),
            footer: None,
            flow_id: "1234".into(),
            flow_cta: "Aç".into(),
            flow_token: "ctx:node".into(),
            flow_action: FlowAction::Navigate,
            screen: None,
            data: None,
        });
        assert_eq!(kind, "interactive");
        assert_eq!(content["type"], "flow");
        assert_eq!(content["whatsappFlowId"], "1234");
        assert_eq!(content["action"]["parameters"]["flow_id"], "1234");
        let (kind, content) = message_content(&Outgoing::Media {
            media: engine::MediaType::Document,
            link: Some("https://cdn.example/f.pdf".into()),
            id: None,
            caption: Some("Form".into()),
            filename: Some("f.pdf".into()),
        });
        assert_eq!(kind, "document");
        assert_eq!(
            content,
            json!({"link": "https://cdn.example/f.pdf", "url": "https://cdn.example/f.pdf",
                   "caption": "Form", "filename": "f.pdf"})
        );
        let (kind, content) = message_content(&Outgoing::LocationRequest {
            body: "Where?".into(),
        });
        assert_eq!(kind, "interactive");
        assert_eq!(content["type"], "location_request_message");
    }

    #[test]
    fn a_context_survives_its_row() {
        let mut variables = Map::new();
        variables.insert("name".into(), json!("Ada"));
        let context = Context {
            id: Uuid::new_v4(),
            conversation_id: Uuid::new_v4(),
            chatbot_id: Uuid::new_v4(),
            current_node_id: "q".into(),
            variables,
            node_history: vec!["s".into(), "q".into()],
            node_outputs: Map::new(),
            is_active: true,
            status: ContextStatus::Running,
            completion_reason: None,
            completed_at: None,
            expires_at: None,
        };
        let back = context_from_row(&context_to_row(&context));
        assert_eq!(back.variables, context.variables);
        assert_eq!(back.node_history, context.node_history);
        assert_eq!(back.current_node_id, "q");
        assert!(back.is_active);
    }
}
