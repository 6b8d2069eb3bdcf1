//! The campaign stage: running campaigns' recipients into the outbox, paced.
//!
//! Each tick takes, per running campaign, as many pending recipients as its pace
//! allows and stores their template messages and send jobs in one transaction with
//! the recipients' new state (so a recipient is queued once, whatever crashes), then
//! hands the jobs, leased to this process, to the sender. The pace:
//! - `--rate` messages per second, at most; all campaigns together at most
//!   [`SHARE`] of `WABOT_SEND_RATE`, the rest kept for the chatbots' replies;
//! - at most about two seconds of sends outstanding (queued, not yet accepted), so
//!   a reply waits behind little of a campaign in the sender, and a Meta that
//!   slows down stops the campaign queueing more; and never more than the sender's
//!   queue takes at once beside the half of it kept for replies, so a campaign's
//!   jobs never wait for a slot outside it;
//! - halved while Meta throttles its sends (130429, 131056; the sender retries
//!   those with backoff), and back up by a quarter per tick once it stops;
//! - paused, with the reason, when a send fails on the number's messaging limit
//!   (131048): those recipients go back to pending for `wabot campaign resume`.
//!
//! Opted-out customers are skipped and counted. Nothing here runs while no
//! campaign is: one query per idle poll (`AppContext::idle_poll`, at least a second),
//! and at once when this process's operator API starts or resumes one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::campaigns::{self as store, CampaignRow};
use crate::store::templates::NewSend;
use crate::whatsapp::templates::{self, Parameters, TemplateMessage};
use crate::worker::proactive::{Placement, Placer};
use crate::worker::sender::SendSink;
use crate::worker::AppContext;

/// The share of `WABOT_SEND_RATE` all campaigns together may use.
pub const SHARE: f64 = 0.8;

/// How often running campaigns are paced.
const TICK: Duration = Duration::from_millis(100);

/// The slowest a throttled campaign goes, in messages per second.
const MIN_RATE: f64 = 0.5;

/// A campaign's pace in this process.
struct Pace {
    tokens: f64,
    at: Instant,
    /// The chatbot placement, compiled once a while rather than every tick.
    placer: Option<(Instant, Arc<Placer>)>,
}

/// How long a compiled placement is used before the chatbot is read again.
const PLACER_FRESH: Duration = Duration::from_secs(30);

/// Runs until `stop`.
pub async fn run(ctx: Arc<AppContext>, sends: SendSink, stop: CancellationToken) {
    let mut paces: HashMap<i64, Pace> = HashMap::new();
    let idle = ctx.idle_poll();
    loop {
        let (wait, busy) = match tick(&ctx, &sends, &mut paces).await {
            Ok(true) => (TICK, true),
            Ok(false) => (idle, false),
            Err(e) => {
                tracing::warn!(error.cause_chain = ?e, "campaign stage: cannot queue sends");
                (idle, false)
            }
        };
        // Idle, the stage waits for the operator API of this process to start or
        // resume a campaign (`ctx.wake.campaigns`), or for the idle poll: a campaign
        // started by `wabot campaign` (another process) begins within it.
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.wake.campaigns.notified(), if !busy => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One round over the running campaigns; whether any is running.
async fn tick(
    ctx: &AppContext,
    sends: &SendSink,
    paces: &mut HashMap<i64, Pace>,
) -> anyhow::Result<bool> {
    let running = store::running(&ctx.pool).await?;
    paces.retain(|id, _| running.iter().any(|c| c.id == *id));
    if running.is_empty() {
        return Ok(false);
    }
    let ceiling = ctx.config.worker.send_rate_per_sec.max(1) as f64 * SHARE / running.len() as f64;
    for campaign in &running {
        if let Err(e) = step(ctx, sends, paces, campaign, ceiling).await {
            tracing::warn!(campaign = campaign.id, error.cause_chain = ?e, "campaign step failed");
        }
    }
    Ok(true)
}

async fn step(
    ctx: &AppContext,
    sends: &SendSink,
    paces: &mut HashMap<i64, Pace>,
    campaign: &CampaignRow,
    ceiling: f64,
) -> anyhow::Result<()> {
    let pool = &ctx.pool;
    if let Some(reason) = store::pause_on_limit(pool, campaign.id).await? {
        tracing::warn!(campaign = campaign.id, "campaign paused: {reason}");
        return Ok(());
    }
    let (open, throttled) = store::outstanding(pool, campaign.id).await?;
    // Slower while Meta throttles, back towards --rate while it does not.
    let mut rate = campaign.current_rate;
    let wanted = if throttled > 0 {
        (rate / 2.0).max(MIN_RATE)
    } else {
        (rate * 1.25).min(campaign.rate)
    };
    if (wanted - rate).abs() > f64::EPSILON {
        if throttled > 0 {
            tracing::info!(
                campaign = campaign.id,
                rate = wanted,
                "Meta throttles the campaign's sends: slowing down"
            );
        }
        store::set_current_rate(pool, campaign.id, wanted).await?;
        rate = wanted;
    }
    let rate = rate.min(ceiling).max(MIN_RATE.min(ceiling));
    let pace = paces.entry(campaign.id).or_insert(Pace {
        tokens: 0.0,
        at: Instant::now(),
        placer: None,
    });
    pace.tokens = (pace.tokens + rate * pace.at.elapsed().as_secs_f64()).min(rate.max(1.0));
    pace.at = Instant::now();
    let room = ((rate * 2.0).ceil() as i64).max(2) - open;
    // Never more than the sender takes without waiting: replies keep half its
    // queue, and a campaign's jobs never wait outside it.
    let room = room.min(sends.room_for_background() as i64);
    let budget = (pace.tokens.floor() as i64).min(room);
    if budget <= 0 {
        return Ok(());
    }
    let queued = queue(ctx, sends, campaign, budget, &mut pace.placer).await?;
    pace.tokens -= queued as f64;
    if queued == 0
        && open == 0
        && store::finish_if_done(pool, campaign.id, ctx.events.get()).await?
    {
        tracing::info!(
            campaign = campaign.id,
            "campaign finished: every recipient was queued"
        );
    }
    Ok(())
}

/// Queues up to `limit` pending recipients; how many were taken.
async fn queue(
    ctx: &AppContext,
    sends: &SendSink,
    campaign: &CampaignRow,
    limit: i64,
    cached: &mut Option<(Instant, Arc<Placer>)>,
) -> anyhow::Result<usize> {
    let pool = &ctx.pool;
    let template = match crate::store::templates::find(
        pool,
        &campaign.template_name,
        Some(&campaign.language),
    )
    .await?
    {
        Ok(t) if t.status == "APPROVED" => t,
        Ok(t) => {
            let reason = format!(
                "template {} ({}) is {}{}",
                t.name,
                t.language,
                t.status,
                t.reason.map(|r| format!(": {r}")).unwrap_or_default()
            );
            pause(pool, campaign.id, &reason).await?;
            return Ok(0);
        }
        Err(why) => {
            pause(pool, campaign.id, &why).await?;
            return Ok(0);
        }
    };
    let params: Parameters =
        serde_json::from_value(template.parameters.clone()).unwrap_or_default();
    let placer = match (campaign.chatbot_id, cached.as_ref()) {
        (Some(_), Some((at, p))) if at.elapsed() < PLACER_FRESH => Some(p.clone()),
        (Some(chatbot_id), _) => {
            let placement = Placement {
                chatbot_id,
                node: campaign.node_id.clone(),
            };
            match Placer::new(pool, &ctx.config, &placement).await {
                Ok(p) => {
                    let p = Arc::new(p);
                    *cached = Some((Instant::now(), p.clone()));
                    Some(p)
                }
                Err(e) => {
                    pause(pool, campaign.id, &e.to_string()).await?;
                    return Ok(0);
                }
            }
        }
        (None, _) => None,
    };

    let mut tx = pool.begin().await?;
    let pending = store::take_pending(&mut tx, campaign.id, limit).await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let business = campaign.business_phone_number_id.as_str();
    let pairs: Vec<(&str, &str)> = pending
        .iter()
        .map(|p| (business, p.recipient.as_str()))
        .collect();
    let opted: Vec<(String, String)> = crate::store::people::opted_out_among(pool, &pairs).await?;
    // Quick replies answer the question the recipients are placed at.
    let payloads = placer.as_ref().map(|p| p.payloads()).unwrap_or_default();
    let mut not_sent: Vec<(i32, &str, String)> = Vec::new();
    let mut news: Vec<(i32, NewSend)> = Vec::new();
    for p in &pending {
        if opted.iter().any(|(_, c)| c == &p.recipient) {
            not_sent.push((p.n, "skipped", "opted out".to_owned()));
            continue;
        }
        let message = TemplateMessage {
            name: template.name.clone(),
            language: template.language.clone(),
            parameters: match &p.params {
                Value::Object(map) => map
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect(),
                _ => Default::default(),
            },
        };
        let mut message = message;
        params.fill_payloads(&mut message.parameters, &payloads);
        let problems = params.check(&message.parameters);
        if !problems.is_empty() {
            not_sent.push((p.n, "invalid", problems.join("; ")));
            continue;
        }
        let message_id = Uuid::new_v4();
        let callback = crate::whatsapp::outbound::callback_data(message_id);
        let body = templates::send_body(
            &p.recipient,
            &message,
            &params,
            &template.parameter_format,
            Some(&callback),
        );
        news.push((
            p.n,
            NewSend {
                business: business.to_owned(),
                customer: p.recipient.clone(),
                bsuid: crate::whatsapp::webhook::is_bsuid(&p.recipient),
                message_id,
                body,
            },
        ));
    }
    let rows: Vec<NewSend> = news.iter().map(|(_, s)| s.clone()).collect();
    let (conversations, jobs) = if rows.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        crate::store::templates::enqueue_sends(&mut tx, &rows, &ctx.holder, Some(ctx.lease()))
            .await?
    };
    if let Some(placer) = &placer {
        if !conversations.is_empty() {
            store::end_contexts(&mut tx, &conversations).await?;
            crate::store::versions::insert_batch(&mut tx, &[&placer.version]).await?;
            let contexts: Vec<_> = rows
                .iter()
                .zip(&conversations)
                .map(|(s, c)| {
                    let mut row = placer.context(&s.customer);
                    row.conversation_id = *c;
                    row
                })
                .collect();
            crate::store::contexts::save_all(&mut tx, contexts.iter()).await?;
        }
    }
    let queued: Vec<(i32, Uuid, Uuid)> = news
        .iter()
        .zip(&conversations)
        .map(|((n, s), c)| (*n, s.message_id, *c))
        .collect();
    store::mark(&mut tx, campaign.id, &queued, &not_sent).await?;
    tx.commit().await?;
    for (_, state, _) in &not_sent {
        crate::metrics::send(if *state == "skipped" {
            "campaign_opted_out"
        } else {
            "campaign_invalid"
        });
    }
    sends.push_all(jobs).await;
    Ok(pending.len())
}

async fn pause(pool: &sqlx::PgPool, id: i64, reason: &str) -> Result<(), sqlx::Error> {
    tracing::warn!(campaign = id, "campaign paused: {reason}");
    store::set_state(pool, id, &["running"], "paused", Some(reason)).await?;
    Ok(())
}
