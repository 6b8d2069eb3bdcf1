//! The turn queue (`turn_jobs`) and the batched reads and writes of the turn stage.
//!
//! A conversation's jobs run one at a time and in arrival order. Ingest creates a
//! message's job already leased to its process when the conversation has nothing
//! older unfinished; a turn's commit finishes its job and, in the same transaction,
//! leases the conversation's next job to the same process. `claim` is the slow path
//! (expired leases, due timers, jobs another process left): it hands out only the
//! oldest unfinished job of a conversation nobody holds. Every lease is a token of
//! its own claim (`holder:<uuid>`) with an expiry on the database's clock; a worker
//! whose lease was taken over finds its token gone when it commits, and its effects
//! are not written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::store::contexts::{self, ContextRow};
use crate::store::events::{EventKind, NewEvent, Subscribed};
use crate::store::outbox::{self, OutboundRow, SendJob};
use crate::store::versions::{self, VersionRow};
use crate::store::CLAIM_TOKEN_SQL as NEW_TOKEN;

/// What a turn job is for; each kind is handled in its own place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// A customer's message (`message_id` names it).
    Inbound,
    /// A question's or a Flow's wait ran out (scheduled by a turn).
    Timeout,
    /// Meta refused a Flow message for good: the node follows its `error` edge.
    FlowFailed,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Inbound => "inbound",
            JobKind::Timeout => "timeout",
            JobKind::FlowFailed => "flow_failed",
        }
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<JobKind, String> {
        match s {
            "inbound" => Ok(JobKind::Inbound),
            "timeout" => Ok(JobKind::Timeout),
            "flow_failed" => Ok(JobKind::FlowFailed),
            other => Err(format!("unknown turn job kind `{other}`")),
        }
    }
}

impl sqlx::Type<sqlx::Postgres> for JobKind {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <String as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for JobKind {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let s = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Ok(s.parse()?)
    }
}

/// A job this process holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedTurn {
    pub id: i64,
    pub conversation_id: Uuid,
    pub message_id: Option<Uuid>,
    pub kind: JobKind,
    pub payload: Value,
    pub attempts: i32,
    /// The error of the previous attempt, if it recorded one.
    pub last_error: Option<String>,
    /// This claim's lease token.
    pub token: String,
    /// Meta's message as received, for an inbound job.
    pub raw: Option<Value>,
    /// Where the message's media was stored (`content.media.stored`), when its
    /// download finished before the claim.
    pub stored_media: Option<Value>,
    /// The job had a lease that expired (its process died or stalled): a take-over.
    #[sqlx(default)]
    pub taken_over: bool,
}

const CLAIMED_COLUMNS: &str = "t.id, t.conversation_id, t.message_id, t.kind, t.payload, \
     t.attempts, t.last_error, t.locked_by AS token, \
     m.content -> 'raw' AS raw, m.content #> '{media,stored}' AS stored_media";

/// Where [`CLAIMED_COLUMNS`] come from: the claimed jobs `t` and their messages (one
/// lookup by key gives Meta's message and the stored media both).
const CLAIMED_FROM: &str = "t LEFT JOIN messages m ON m.id = t.message_id";

/// Claims up to `limit` jobs for `holder`, at most one per conversation, each the
/// oldest unfinished job of its conversation (a timer not yet due does not hold the
/// conversation up; an inbound job waiting for its retry does). A conversation with
/// a job in flight (leased) is not claimed again, whatever the ids, and a timer
/// waits behind every unfinished message of its conversation: a reply that came in
/// while the timer was due ends the wait it was for. One statement: selecting and
/// marking happen together, so no two workers get the same job.
pub async fn claim(
    pool: &PgPool,
    holder: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<ClaimedTurn>, sqlx::Error> {
    sqlx::query_as(&format!(
        "WITH candidates AS ( \
             SELECT j.id, j.locked_until IS NOT NULL AS taken_over FROM turn_jobs j \
             WHERE j.done_at IS NULL AND j.run_at <= now() \
               AND (j.locked_until IS NULL OR j.locked_until < now()) \
               AND NOT EXISTS ( \
                   SELECT 1 FROM turn_jobs e \
                   WHERE e.conversation_id = j.conversation_id AND e.done_at IS NULL \
                     AND e.id <> j.id \
                     AND (e.locked_until >= now() \
                          OR (e.kind <> 'timeout' AND (e.id < j.id OR j.kind = 'timeout')) \
                          OR (e.kind = 'timeout' AND j.kind = 'timeout' AND e.id < j.id \
                              AND e.run_at <= now()))) \
             ORDER BY j.id \
             LIMIT $3 \
             FOR UPDATE SKIP LOCKED), \
         t AS ( \
             UPDATE turn_jobs u \
                SET locked_by = {NEW_TOKEN}, \
                    locked_until = now() + make_interval(secs => $2), \
                    attempts = u.attempts + 1 \
               FROM candidates c WHERE u.id = c.id \
             RETURNING u.*, c.taken_over) \
         SELECT {CLAIMED_COLUMNS}, t.taken_over FROM {CLAIMED_FROM} ORDER BY t.id"
    ))
    .bind(holder)
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Extends every lease in `tokens` that is still held (the turns this process runs
/// or has queued); see
/// [`crate::store::keep_leases`].
pub async fn keep_leases(
    pool: &PgPool,
    tokens: &[String],
    lease: Duration,
) -> Result<u64, sqlx::Error> {
    crate::store::keep_leases(pool, crate::store::Queue::Turns, tokens, lease).await
}

/// Hands a job back to run again at `run_at`, keeping the error.
pub async fn retry_later(
    pool: &PgPool,
    id: i64,
    token: &str,
    error: &str,
    run_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE turn_jobs SET locked_by = NULL, locked_until = NULL, last_error = $3, run_at = $4 \
         WHERE id = $1 AND locked_by = $2 AND done_at IS NULL",
    )
    .bind(id)
    .bind(token)
    .bind(error)
    .bind(run_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks a job done with a note, outside a turn (a job given up).
pub async fn give_up(pool: &PgPool, id: i64, token: &str, note: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE turn_jobs SET done_at = now(), locked_until = NULL, last_error = $3 \
         WHERE id = $1 AND locked_by = $2 AND done_at IS NULL",
    )
    .bind(id)
    .bind(token)
    .bind(note)
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives back every job held by `holder` (graceful shutdown), without counting the
/// attempt.
pub async fn release_all(pool: &PgPool, holder: &str) -> Result<u64, sqlx::Error> {
    crate::store::release_all(pool, crate::store::Queue::Turns, holder).await
}

/// Schedules a `timeout` job for the conversation, inside the caller's transaction.
pub async fn schedule_timeout(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    run_at: DateTime<Utc>,
    payload: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO turn_jobs (conversation_id, kind, payload, run_at) \
         VALUES ($1, 'timeout', $2, $3)",
    )
    .bind(conversation_id)
    .bind(payload)
    .bind(run_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// What the turns of one conversation need to know, read for a whole batch at once.
#[derive(Debug, Clone)]
pub struct TurnFacts {
    pub business_user_id: Uuid,
    pub business_phone_number_id: String,
    pub customer_user_id: Uuid,
    /// The conversation's key: the customer's wa_id, or their BSUID when the
    /// conversation began without a phone number (opt-outs are kept by it).
    pub customer_wa_id: String,
    /// The customer's phone number (`users."phoneNumber"`), when known.
    pub customer_phone: Option<String>,
    /// The customer's BSUID and username (`wabot_customer_ids`), when known.
    pub customer_bsuid: Option<String>,
    pub customer_username: Option<String>,
    pub customer_name: String,
    /// The active context, if any.
    pub context: Option<ContextRow>,
    /// The `updatedAt` of the context's chatbot (the compiled cache's key).
    pub chatbot_updated_at: Option<DateTime<Utc>>,
    /// A version of the set of active chatbots (changes whenever one is activated,
    /// deactivated, edited or deleted), so the caller can cache what it chooses from.
    pub active_chatbots: String,
    /// Someone other than the bot has the conversation (`wabot_handover`): its state
    /// and the agent's latest message.
    pub handover: Option<(String, DateTime<Utc>)>,
    /// The customer opted out (`wabot_opt_outs`).
    pub opted_out: bool,
}

impl TurnFacts {
    /// Where replies go: the phone number when known, else the BSUID.
    pub fn customer_address(&self) -> &str {
        self.customer_phone
            .as_deref()
            .or(self.customer_bsuid.as_deref())
            .unwrap_or(&self.customer_wa_id)
    }
}

/// One read for a batch of turns: who each conversation is between (the customer
/// is who replies go to: the participant that is not the business), its active
/// context and that context's chatbot version. Conversations without a key (no
/// customer) are absent.
pub async fn load_batch(
    pool: &PgPool,
    conversations: &[Uuid],
) -> Result<HashMap<Uuid, TurnFacts>, sqlx::Error> {
    type Row = (
        Uuid,
        Uuid,
        String,
        Uuid,
        String,
        String,
        Option<sqlx::types::Json<ContextRow>>,
        Option<DateTime<Utc>>,
        String,
        Option<String>,
        Option<DateTime<Utc>>,
        bool,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT k.conversation_id, b.id, k.business_phone_number_id::text, \
                c.id, k.customer_wa_id::text, c.name, \
                (SELECT to_jsonb(x) FROM conversation_contexts x \
                 WHERE x.\"conversationId\" = k.conversation_id AND x.\"isActive\" LIMIT 1), \
                (SELECT ch.\"updatedAt\" FROM conversation_contexts x \
                 JOIN chatbots ch ON ch.id = x.\"chatbotId\" \
                 WHERE x.\"conversationId\" = k.conversation_id AND x.\"isActive\" LIMIT 1), \
                (SELECT count(*)::text || ':' || coalesce(max(\"updatedAt\")::text, '') || ':' \
                        || coalesce(sum(hashtext(id::text))::text, '') \
                 FROM chatbots WHERE \"isActive\"), \
                h.state, h.last_agent_at, \
                EXISTS (SELECT 1 FROM wabot_opt_outs o \
                        WHERE o.business_phone_number_id = k.business_phone_number_id \
                          AND o.customer_wa_id = k.customer_wa_id), \
                c.\"phoneNumber\"::text, ci.bsuid::text, ci.username::text \
         FROM conversation_keys k \
         JOIN users b ON b.\"phoneNumber\" = k.business_phone_number_id \
         JOIN LATERAL (SELECT u.id, u.name, u.\"phoneNumber\" FROM users u \
                       WHERE u.\"phoneNumber\" = k.customer_wa_id \
                       UNION ALL \
                       SELECT u.id, u.name, u.\"phoneNumber\" FROM wabot_customer_ids kb \
                       JOIN users u ON u.id = kb.user_id WHERE kb.bsuid = k.customer_wa_id \
                       LIMIT 1) c ON true \
         LEFT JOIN LATERAL (SELECT i.bsuid, i.username FROM wabot_customer_ids i \
                            WHERE i.user_id = c.id \
                            ORDER BY i.bsuid = k.customer_wa_id DESC, i.updated_at DESC \
                            LIMIT 1) ci ON true \
         LEFT JOIN wabot_handover h ON h.conversation_id = k.conversation_id \
         WHERE k.conversation_id = ANY($1)",
    )
    .bind(conversations)
    .fetch_all(pool)
    .await?;
    let mut facts = HashMap::with_capacity(rows.len());
    for (
        conversation,
        business_user_id,
        business,
        customer_user_id,
        wa_id,
        name,
        ctx,
        bot_at,
        active,
        handover_state,
        last_agent_at,
        opted_out,
        phone,
        bsuid,
        username,
    ) in rows
    {
        let context = ctx.map(|json| json.0);
        facts.insert(
            conversation,
            TurnFacts {
                business_user_id,
                business_phone_number_id: business,
                customer_user_id,
                customer_wa_id: wa_id,
                customer_phone: phone,
                customer_bsuid: bsuid,
                customer_username: username,
                customer_name: name,
                context,
                chatbot_updated_at: bot_at,
                active_chatbots: active,
                handover: handover_state.zip(last_agent_at),
                opted_out,
            },
        );
    }
    Ok(facts)
}

/// Everything one turn writes, plain.
#[derive(Debug, Clone)]
pub struct TurnEffects {
    pub job_id: i64,
    pub token: String,
    pub conversation_id: Uuid,
    /// The context the turn read and its version: the commit is refused when the
    /// row changed since (another turn ran).
    pub guard: Option<(Uuid, DateTime<Utc>)>,
    /// Who had the conversation when the turn read it (`wabot_handover`'s state
    /// and the agent's last message): a turn that would speak is run again when an
    /// agent or an operator took the conversation meanwhile.
    pub handover_seen: Option<(String, DateTime<Utc>)>,
    /// Contexts to save, in order (an ended context before the one replacing it).
    pub contexts: Vec<ContextRow>,
    /// Chatbot versions the turn pinned a context to that may not be stored yet
    /// (the first start on a graph): written with the context, or neither is.
    pub versions: Vec<Arc<VersionRow>>,
    /// A timer to schedule: when, and its payload.
    pub timer: Option<(DateTime<Utc>, Value)>,
    /// The replies, in order.
    pub sends: Vec<OutboundRow>,
    /// The conversation's new `lastMessage`, when the turn replied.
    pub preview: Option<String>,
    /// Why nothing ran (kept in `last_error` of a done job).
    pub note: Option<String>,
    /// What the turn changes of who has the conversation and of the customer's
    /// consent (rare: most turns change nothing).
    pub people: Vec<PeopleChange>,
    /// What the turn did, for `wabot_turn_log`.
    pub log: TurnLogRow,
}

/// A change a turn makes to `wabot_handover` or `wabot_opt_outs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeopleChange {
    /// The bot has the conversation again (the agent's idle time ran out).
    Release,
    /// The customer asked for a person: `source` is `keyword` or `node`.
    RequestAgent { source: &'static str },
    /// The customer said an opt-out word.
    OptOut {
        business: String,
        customer: String,
        word: String,
    },
    /// The customer said an opt-in word.
    OptIn { business: String, customer: String },
}

/// One row of `wabot_turn_log`: what a finished turn did (written by the turn
/// commit, read back by `store::ops::turn_log`).
#[derive(Debug, Clone, Default, serde::Serialize, sqlx::FromRow)]
pub struct TurnLogRow {
    pub kind: String,
    pub message_id: Option<Uuid>,
    pub chatbot_id: Option<Uuid>,
    pub context_id: Option<Uuid>,
    /// Node ids executed, in order.
    pub nodes: Vec<String>,
    pub steps: i32,
    pub current_node_id: Option<String>,
    pub status: Option<String>,
    pub completion_reason: Option<String>,
    pub variables: Option<Value>,
}

/// What became of one turn of a committed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    Done,
    /// Another worker holds the job now; nothing of this turn was written.
    LeaseLost,
    /// The context changed since the turn read it; nothing was written.
    Stale,
}

/// What a committed batch did.
#[derive(Debug, Default)]
pub struct BatchCommit {
    /// One per turn, in order.
    pub turns: Vec<Committed>,
    /// The send jobs the batch created, leased to the caller where the
    /// conversation's older jobs are the caller's too.
    pub sends: Vec<SendJob>,
    /// The conversations' next jobs, leased to the caller.
    pub next: Vec<ClaimedTurn>,
}

/// Commits a batch of turns in one transaction: every turn whose lease still holds
/// and whose context is unchanged has its new chatbot versions, contexts, timer,
/// replies and send jobs,
/// preview and job completion written; its conversation's next job (a message that
/// came in meanwhile) is leased to `holder` in the same transaction.
/// Whether an agent or an operator took the conversation after the turn read it
/// and the turn would speak: it runs again, and the session rules silence it.
fn taken_meanwhile(turn: &TurnEffects, now: Option<&(String, DateTime<Utc>)>) -> bool {
    let silent = |state: &str| matches!(state, "agent" | "requested" | "paused");
    !turn.sends.is_empty()
        && now.is_some_and(|(state, _)| silent(state))
        && now != turn.handover_seen.as_ref()
}

pub async fn commit_batch(
    pool: &PgPool,
    turns: &[TurnEffects],
    holder: &str,
    lease: Duration,
    events: Subscribed,
) -> Result<BatchCommit, sqlx::Error> {
    // The conversations' rows, in id order (as ingest takes them): a message that
    // ingest stores meanwhile either sees this job done (and is leased by ingest) or
    // is seen by the next-job claim below. The lock goes with the BEGIN, in one
    // round trip (a simple query: the ids are written into it, as uuids print only
    // hex digits and dashes).
    let mut convs: Vec<Uuid> = turns.iter().map(|t| t.conversation_id).collect();
    convs.sort();
    convs.dedup();
    let mut tx = if convs.is_empty() {
        pool.begin().await?
    } else {
        let ids: Vec<String> = convs.iter().map(|id| format!("'{id}'")).collect();
        pool.begin_with(format!(
            "BEGIN; SELECT 1 FROM conversations WHERE id IN ({}) ORDER BY id FOR UPDATE",
            ids.join(",")
        ))
        .await?
    };
    let conn: &mut PgConnection = &mut tx;

    let ids: Vec<i64> = turns.iter().map(|t| t.job_id).collect();
    let tokens: Vec<&str> = turns.iter().map(|t| t.token.as_str()).collect();
    let guarded: Vec<Uuid> = turns.iter().filter_map(|t| t.guard.map(|g| g.0)).collect();
    // One round trip for both checks, made after the conversations' lock (above),
    // which orders this read after any pause or echo that committed first: the jobs
    // still ours, each with who has its conversation now, and the versions of the
    // contexts the turns read (locked: the turns' saves below replace them).
    type Held = (
        Option<i64>,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<Uuid>,
    );
    let rows: Vec<Held> = sqlx::query_as(
        "WITH held AS ( \
             SELECT t.id, h.state, h.last_agent_at FROM turn_jobs t \
             JOIN unnest($1::bigint[], $2::text[]) AS u(id, token) \
               ON t.id = u.id AND t.locked_by = u.token \
             LEFT JOIN wabot_handover h ON h.conversation_id = t.conversation_id \
             WHERE t.done_at IS NULL ORDER BY t.id FOR UPDATE OF t), \
         guarded AS ( \
             SELECT id, \"updatedAt\" FROM conversation_contexts WHERE id = ANY($3) \
             ORDER BY id FOR UPDATE) \
         SELECT id, state, last_agent_at, NULL::uuid FROM held \
         UNION ALL \
         SELECT NULL, NULL, \"updatedAt\", id FROM guarded",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(&guarded)
    .fetch_all(&mut *conn)
    .await?;
    let mut held: HashMap<i64, Option<(String, DateTime<Utc>)>> = HashMap::new();
    let mut versions: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    for (job, state, at, context) in rows {
        match (job, context, at) {
            (Some(job), _, _) => {
                held.insert(job, state.zip(at));
            }
            (None, Some(context), Some(at)) => {
                versions.insert(context, at);
            }
            _ => {}
        }
    }

    let verdicts: Vec<Committed> = turns
        .iter()
        .map(|t| {
            let Some(now) = held.get(&t.job_id) else {
                return Committed::LeaseLost;
            };
            if t.guard.is_some_and(|(id, v)| versions.get(&id) != Some(&v))
                || taken_meanwhile(t, now.as_ref())
            {
                Committed::Stale
            } else {
                Committed::Done
            }
        })
        .collect();
    let done: Vec<&TurnEffects> = turns
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| **v == Committed::Done)
        .map(|(t, _)| t)
        .collect();
    if done.is_empty() {
        tx.rollback().await?;
        return Ok(BatchCommit {
            turns: verdicts,
            ..BatchCommit::default()
        });
    }

    let new_versions: Vec<&VersionRow> = done
        .iter()
        .flat_map(|t| t.versions.iter().map(|v| &**v))
        .collect();
    versions::insert_batch(&mut tx, &new_versions).await?;
    contexts::save_all(&mut tx, done.iter().flat_map(|t| &t.contexts)).await?;

    apply_people(&mut tx, &done).await?;
    if !events.is_empty() {
        crate::store::events::emit(&mut tx, events, &turn_events(&done)).await?;
    }

    let outbound: Vec<OutboundRow> = done.iter().flat_map(|t| t.sends.clone()).collect();
    let sends = outbox::enqueue_batch(&mut tx, &outbound, holder, Some(lease)).await?;

    let next = finish(&mut tx, &done, holder, lease).await?;
    tx.commit().await?;
    Ok(BatchCommit {
        turns: verdicts,
        sends,
        next,
    })
}

/// What the batch's turns report to event endpoints: a run completed, a customer
/// asking for a person, opting out or in.
fn turn_events(done: &[&TurnEffects]) -> Vec<NewEvent> {
    let mut out = Vec::new();
    for t in done {
        let conversation_id = Some(t.conversation_id);
        if t.log.status.as_deref() == Some("completed") {
            let variables = match &t.log.variables {
                Some(Value::Object(map)) => Value::Object(
                    map.iter()
                        // wabot's bookkeeping (engine::context::STATE_KEY) is not the
                        // customer's data.
                        .filter(|(k, _)| k.as_str() != "__wabot")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                _ => Value::Null,
            };
            out.push(NewEvent {
                kind: EventKind::ConversationCompleted,
                conversation_id,
                data: serde_json::json!({
                    "conversation_id": t.conversation_id,
                    "chatbot_id": t.log.chatbot_id,
                    "context_id": t.log.context_id,
                    "completion_reason": t.log.completion_reason,
                    "variables": variables,
                }),
            });
        }
        for change in &t.people {
            let (kind, data) = match change {
                PeopleChange::Release => continue,
                PeopleChange::RequestAgent { source } => (
                    EventKind::ConversationHandoverRequested,
                    serde_json::json!({"conversation_id": t.conversation_id, "source": source}),
                ),
                PeopleChange::OptOut {
                    business,
                    customer,
                    word,
                } => (
                    EventKind::CustomerOptedOut,
                    serde_json::json!({
                        "conversation_id": t.conversation_id, "customer": customer,
                        "business_phone_number_id": business, "source": "keyword", "word": word,
                    }),
                ),
                PeopleChange::OptIn { business, customer } => (
                    EventKind::CustomerOptedIn,
                    serde_json::json!({
                        "conversation_id": t.conversation_id, "customer": customer,
                        "business_phone_number_id": business, "source": "keyword",
                    }),
                ),
            };
            out.push(NewEvent {
                kind,
                conversation_id,
                data,
            });
        }
    }
    out
}

/// The batch's handover and opt-out changes: one statement per kind of change
/// present, none for a batch without any (almost every batch).
async fn apply_people(conn: &mut PgConnection, done: &[&TurnEffects]) -> Result<(), sqlx::Error> {
    let mut release = Vec::new();
    let mut request: Vec<(Uuid, &str)> = Vec::new();
    let mut out: Vec<(&str, &str, &str)> = Vec::new();
    let mut back: Vec<(&str, &str)> = Vec::new();
    for t in done {
        for change in &t.people {
            match change {
                PeopleChange::Release => release.push(t.conversation_id),
                PeopleChange::RequestAgent { source } => request.push((t.conversation_id, source)),
                PeopleChange::OptOut {
                    business,
                    customer,
                    word,
                } => out.push((business, customer, word)),
                PeopleChange::OptIn { business, customer } => back.push((business, customer)),
            }
        }
    }
    if !release.is_empty() {
        sqlx::query("DELETE FROM wabot_handover WHERE conversation_id = ANY($1)")
            .bind(&release)
            .execute(&mut *conn)
            .await?;
    }
    if !request.is_empty() {
        let c: Vec<Uuid> = request.iter().map(|r| r.0).collect();
        let src: Vec<&str> = request.iter().map(|r| r.1).collect();
        // An agent or an operator who got there first keeps the conversation.
        sqlx::query(
            "INSERT INTO wabot_handover (conversation_id, state, source) \
             SELECT c, 'requested', s FROM unnest($1::uuid[], $2::text[]) AS u(c, s) \
             ON CONFLICT (conversation_id) DO NOTHING",
        )
        .bind(&c)
        .bind(&src)
        .execute(&mut *conn)
        .await?;
    }
    if !out.is_empty() {
        let b: Vec<&str> = out.iter().map(|o| o.0).collect();
        let c: Vec<&str> = out.iter().map(|o| o.1).collect();
        let w: Vec<&str> = out.iter().map(|o| o.2).collect();
        sqlx::query(
            "INSERT INTO wabot_opt_outs (business_phone_number_id, customer_wa_id, source, word) \
             SELECT b, c, 'keyword', w FROM unnest($1::text[], $2::text[], $3::text[]) \
                 AS u(b, c, w) \
             ON CONFLICT (business_phone_number_id, customer_wa_id) \
             DO UPDATE SET opted_out_at = now(), source = 'keyword', word = EXCLUDED.word",
        )
        .bind(&b)
        .bind(&c)
        .bind(&w)
        .execute(&mut *conn)
        .await?;
    }
    if !back.is_empty() {
        let b: Vec<&str> = back.iter().map(|o| o.0).collect();
        let c: Vec<&str> = back.iter().map(|o| o.1).collect();
        sqlx::query(
            "DELETE FROM wabot_opt_outs o USING unnest($1::text[], $2::text[]) AS u(b, c) \
             WHERE o.business_phone_number_id = u.b AND o.customer_wa_id = u.c",
        )
        .bind(&b)
        .bind(&c)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The rest of a batch's commit, in one statement (one round trip, where each part
/// used to be its own): every turn replaces the wait it was for (the conversation's
/// pending timers go, but a timer job that is itself the turn, and the new wait's
/// timer comes); the conversations' previews; the jobs done; the batch's
/// `wabot_turn_log` rows; and each conversation's next job leased to `holder` when
/// it is a message (or a failed Flow) that is due and nobody holds (timers are left
/// to `claim`).
///
/// The parts run on one snapshot, taken after the conversations' lock, so none sees
/// another's changes: they touch disjoint rows (the timers deleted are not the jobs
/// finished, which the next-job lookup skips by id; the new timers are not
/// candidates), and no other transaction adds a job to a locked conversation.
async fn finish(
    conn: &mut PgConnection,
    done: &[&TurnEffects],
    holder: &str,
    lease: Duration,
) -> Result<Vec<ClaimedTurn>, sqlx::Error> {
    let convs: Vec<Uuid> = done.iter().map(|t| t.conversation_id).collect();
    let ids: Vec<i64> = done.iter().map(|t| t.job_id).collect();
    let notes: Vec<Option<&str>> = done.iter().map(|t| t.note.as_deref()).collect();

    let timers: Vec<(Uuid, DateTime<Utc>, &Value)> = done
        .iter()
        .filter_map(|t| t.timer.as_ref().map(|(at, p)| (t.conversation_id, *at, p)))
        .collect();
    let timer_conv: Vec<Uuid> = timers.iter().map(|t| t.0).collect();
    let timer_at: Vec<DateTime<Utc>> = timers.iter().map(|t| t.1).collect();
    let timer_payload: Vec<&Value> = timers.iter().map(|t| t.2).collect();

    let previews: Vec<(Uuid, &str)> = done
        .iter()
        .filter_map(|t| t.preview.as_deref().map(|p| (t.conversation_id, p)))
        .collect();
    let preview_conv: Vec<Uuid> = previews.iter().map(|p| p.0).collect();
    // "lastMessage" is a varchar(1000).
    let preview_text: Vec<String> = previews
        .iter()
        .map(|p| crate::text::truncate_chars(p.1, 1000))
        .collect();

    let kind: Vec<&str> = done.iter().map(|t| t.log.kind.as_str()).collect();
    let message: Vec<Option<Uuid>> = done.iter().map(|t| t.log.message_id).collect();
    let bot: Vec<Option<Uuid>> = done.iter().map(|t| t.log.chatbot_id).collect();
    let context: Vec<Option<Uuid>> = done.iter().map(|t| t.log.context_id).collect();
    // Arrays of arrays must be rectangular in PostgreSQL: the node lists go as one
    // JSON array each and are unpacked in the statement.
    let nodes: Vec<Value> = done
        .iter()
        .map(|t| Value::from(t.log.nodes.clone()))
        .collect();
    let steps: Vec<i32> = done.iter().map(|t| t.log.steps).collect();
    let node: Vec<Option<&str>> = done
        .iter()
        .map(|t| t.log.current_node_id.as_deref())
        .collect();
    let status: Vec<Option<&str>> = done.iter().map(|t| t.log.status.as_deref()).collect();
    let reason: Vec<Option<&str>> = done
        .iter()
        .map(|t| t.log.completion_reason.as_deref())
        .collect();
    let vars: Vec<Option<&Value>> = done.iter().map(|t| t.log.variables.as_ref()).collect();
    let sends: Vec<i32> = done.iter().map(|t| t.sends.len() as i32).collect();

    sqlx::query_as(&format!(
        "WITH gone AS ( \
             DELETE FROM turn_jobs WHERE conversation_id = ANY($3) AND kind = 'timeout' \
               AND done_at IS NULL AND id <> ALL($4)), \
         timers AS ( \
             INSERT INTO turn_jobs (conversation_id, kind, payload, run_at) \
             SELECT c, 'timeout', p, at \
             FROM unnest($6::uuid[], $7::timestamptz[], $8::jsonb[]) AS u(c, at, p)), \
         previews AS ( \
             UPDATE conversations c SET \"lastMessage\" = u.preview, \
                    \"lastMessageAt\" = now(), \"updatedAt\" = now() \
             FROM unnest($9::uuid[], $10::text[]) AS u(id, preview) \
             WHERE c.id = u.id \
               AND (c.\"lastMessageAt\" IS NULL OR c.\"lastMessageAt\" <= now())), \
         finished AS ( \
             UPDATE turn_jobs t SET done_at = now(), locked_until = NULL, last_error = u.note \
             FROM unnest($4::bigint[], $5::text[]) AS u(id, note) WHERE t.id = u.id), \
         log AS ( \
             INSERT INTO wabot_turn_log (conversation_id, job_id, kind, message_id, \
                 chatbot_id, context_id, nodes, steps, current_node_id, status, \
                 completion_reason, variables, sends, note) \
             SELECT c, j, k, m, b, x, ARRAY(SELECT jsonb_array_elements_text(n)), s, cn, \
                    st, r, v, se, no \
             FROM unnest($3::uuid[], $4::bigint[], $11::text[], $12::uuid[], $13::uuid[], \
                         $14::uuid[], $15::jsonb[], $16::int[], $17::text[], $18::text[], \
                         $19::text[], $20::jsonb[], $21::int[], $5::text[]) \
                 AS u(c, j, k, m, b, x, n, s, cn, st, r, v, se, no)), \
         head AS ( \
             SELECT DISTINCT ON (conversation_id) id, run_at, locked_until FROM turn_jobs \
             WHERE conversation_id = ANY($3) AND done_at IS NULL AND kind <> 'timeout' \
               AND id <> ALL($4) \
             ORDER BY conversation_id, id), \
         t AS ( \
             UPDATE turn_jobs u \
                SET locked_by = {NEW_TOKEN}, \
                    locked_until = now() + make_interval(secs => $2), \
                    attempts = u.attempts + 1 \
               FROM head h \
              WHERE u.id = h.id AND h.run_at <= now() \
                AND (h.locked_until IS NULL OR h.locked_until < now()) \
             RETURNING u.*) \
         SELECT {CLAIMED_COLUMNS} FROM {CLAIMED_FROM} ORDER BY t.id"
    ))
    .bind(holder)
    .bind(lease.as_secs_f64())
    .bind(&convs)
    .bind(&ids)
    .bind(&notes)
    .bind(&timer_conv)
    .bind(&timer_at)
    .bind(&timer_payload)
    .bind(&preview_conv)
    .bind(&preview_text)
    .bind(&kind)
    .bind(&message)
    .bind(&bot)
    .bind(&context)
    .bind(&nodes)
    .bind(&steps)
    .bind(&node)
    .bind(&status)
    .bind(&reason)
    .bind(&vars)
    .bind(&sends)
    .fetch_all(&mut *conn)
    .await
}

/// Deletes finished turn and send jobs older than `keep`, then vacuums both queues
/// so that the claim's index scans stay short even where autovacuum is off or slow.
pub async fn purge_finished(pool: &PgPool, keep: Duration) -> Result<u64, sqlx::Error> {
    let keep = keep.as_secs_f64();
    let turns =
        sqlx::query("DELETE FROM turn_jobs WHERE done_at < now() - make_interval(secs => $1)")
            .bind(keep)
            .execute(pool)
            .await?
            .rows_affected();
    let sends =
        sqlx::query("DELETE FROM send_jobs WHERE done_at < now() - make_interval(secs => $1)")
            .bind(keep)
            .execute(pool)
            .await?
            .rows_affected();
    // VACUUM cannot run inside a transaction; each is its own statement.
    sqlx::query("VACUUM (ANALYZE) turn_jobs")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM (ANALYZE) send_jobs")
        .execute(pool)
        .await?;
    Ok(turns + sends)
}
