//! Delivery statuses of outbound messages: recorded once per (wamid, status), applied
//! forward only, and kept until their message is known when they arrive first.
//!
//! A status can race wabot's own record of the send: Meta may report `sent` or even
//! `delivered` before the sender has stored the wamid Meta returned. Both sides take
//! a transaction-scoped advisory lock on each wamid (in sorted order, so two batches
//! never wait on each other in a cycle) before looking at the other's rows, so
//! whichever commits second sees what the first wrote: either the webhook finds the
//! message, or the sender finds the waiting status.
//!
//! Everything here is set-based: a batch of statuses costs the same handful of
//! statements whether it holds one status or five hundred.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

/// One status Meta reported, as a row.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    pub wamid: String,
    /// The `message_statuses.status` key: `sent`, `delivered`, ... or, for statuses
    /// of other kinds (a payment's), `kind:status`, kept apart from delivery ones.
    pub key: String,
    /// The `messages.status` this status moves its message to, when it is a
    /// delivery status that does (`None` for payments and unknown statuses).
    pub message_status: Option<String>,
    pub meta_timestamp: Option<DateTime<Utc>>,
    pub recipient_id: Option<String>,
    /// Meta's errors, `[{code, title, message, details}]`.
    pub errors: Value,
    /// What Meta's status object holds beyond the columns above (its conversation
    /// and pricing objects, biz_opaque_callback_data, a payment's details), as JSON
    /// text; `None` when nothing. With the columns it is the whole status object
    /// (a webhook of statuses only has no other raw copy). wabot's own callback data
    /// is not stored when the status is applied to the message it names.
    pub extra: Option<String>,
    /// The outbound message the status's callback data names (wabot writes its
    /// message id into every send): a status for a send whose outcome was never
    /// recorded finishes that send.
    pub sent_message: Option<Uuid>,
}

/// What became of one reported status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOutcome {
    /// Weighed against its message (which moved forward, or was already further).
    Applied,
    /// Its message is not known yet; kept until `apply_early`.
    Pending,
    /// The same (wamid, status) was recorded before.
    Duplicate,
}

/// The order of `messages_status_enum`: a status applies only when it is further.
fn rank(status: &str) -> u8 {
    match status {
        "pending" => 0,
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        "played" => 4,
        "failed" => 5,
        _ => 0,
    }
}

/// Records a batch of statuses inside the caller's transaction; one outcome per row,
/// in order. A status whose message is known is stored already applied; the others
/// wait for `apply_early`.
///
/// Two statements: the wamid locks, then one that locks the messages (in id order),
/// inserts the statuses and moves each message to its furthest new status; and
/// between them `confirm_sends` when a status carries wabot's callback data.
pub async fn record_batch(
    conn: &mut PgConnection,
    rows: &[&StatusRow],
) -> Result<Vec<StatusOutcome>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    lock_wamids(conn, rows.iter().map(|r| r.wamid.as_str())).await?;
    // Before the messages are looked up by wamid, so that a status of a send whose
    // outcome was never recorded finds its message as if it had been. (Under load
    // Meta's `sent` often comes before the sender's record: a tenth of all statuses
    // in the e2e bench. Looking first and confirming after cost them a second
    // write of their row.)
    confirm_sends(conn, rows).await?;

    let wamids: Vec<&str> = rows.iter().map(|r| r.wamid.as_str()).collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let times: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.meta_timestamp).collect();
    let recipients: Vec<Option<&str>> = rows.iter().map(|r| r.recipient_id.as_deref()).collect();
    let errors: Vec<&Value> = rows.iter().map(|r| &r.errors).collect();
    let extras: Vec<Option<&str>> = rows.iter().map(|r| r.extra.as_deref()).collect();
    // `m`: the messages, locked in id order. `ins`: the statuses in Meta's order (a
    // transcript lists one batch's statuses of a message in that order), applied
    // where their message is known; wabot's own callback data is dropped from
    // `extra` there (the message id says it). `mv`: each message's furthest new delivery status (the
    // order of `messages_status_enum`; applying the furthest is what applying them
    // one by one would come to, since each only moves forward). The statement
    // returns the statuses inserted (`true`) and the wamids found (`false`).
    let returned: Vec<(bool, String, Option<String>)> = sqlx::query_as(
        "WITH u AS (SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], \
                                         $4::text[], $5::jsonb[], $6::text[]) \
                    WITH ORDINALITY AS u(w, st, ts, r, e, x, n)), \
         m AS MATERIALIZED ( \
            SELECT id, content ->> 'whatsappMessageId' AS w FROM messages \
            WHERE content ->> 'whatsappMessageId' = ANY($1) ORDER BY id FOR UPDATE), \
         ins AS ( \
            INSERT INTO message_statuses \
                (wamid, status, meta_timestamp, recipient_id, errors, extra, message_id, \
                 applied_at) \
            SELECT u.w, u.st, u.ts, u.r, u.e, \
                   CASE WHEN m.id IS NOT NULL \
                         AND u.x::jsonb ->> 'biz_opaque_callback_data' = 'wabot:' || m.id \
                        THEN nullif(u.x::jsonb - 'biz_opaque_callback_data', '{}') \
                        ELSE u.x::jsonb END, \
                   m.id, CASE WHEN m.id IS NULL THEN NULL ELSE now() END \
            FROM u LEFT JOIN m ON m.w = u.w ORDER BY u.n \
            ON CONFLICT DO NOTHING RETURNING wamid, status, message_id, errors), \
         mv AS ( \
            SELECT DISTINCT ON (message_id) message_id AS id, \
                   status::messages_status_enum AS s, errors \
            FROM ins WHERE message_id IS NOT NULL \
              AND status IN ('sent', 'delivered', 'read', 'played', 'failed') \
            ORDER BY message_id, status::messages_status_enum DESC), \
         upd AS ( \
            UPDATE messages msg SET status = mv.s, \
                   content = CASE WHEN mv.s = 'failed' \
                                  THEN msg.content || jsonb_build_object('failed', true, \
                                           'error', mv.errors -> 0, 'statusErrors', mv.errors) \
                                  ELSE msg.content END, \
                   \"updatedAt\" = now() \
            FROM mv WHERE msg.id = mv.id AND msg.status <> 'failed' AND msg.status < mv.s) \
         SELECT true, wamid, status FROM ins \
         UNION ALL SELECT false, w, NULL FROM m",
    )
    .bind(&wamids)
    .bind(&keys)
    .bind(&times)
    .bind(&recipients)
    .bind(&errors)
    .bind(&extras)
    .fetch_all(&mut *conn)
    .await?;
    let mut inserted: BTreeSet<(String, String)> = BTreeSet::new();
    let mut found: BTreeSet<String> = BTreeSet::new();
    for (new, wamid, key) in returned {
        match (new, key) {
            (true, Some(key)) => {
                inserted.insert((wamid, key));
            }
            _ => {
                found.insert(wamid);
            }
        }
    }

    let mut outcomes = Vec::with_capacity(rows.len());
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    for row in rows {
        let key = (row.wamid.as_str(), row.key.as_str());
        // A (wamid, status) that appears twice in one batch is inserted once.
        if !inserted.contains(&(row.wamid.clone(), row.key.clone())) || !seen.insert(key) {
            outcomes.push(StatusOutcome::Duplicate);
        } else if found.contains(&row.wamid) {
            outcomes.push(StatusOutcome::Applied);
        } else {
            outcomes.push(StatusOutcome::Pending);
        }
    }
    Ok(outcomes)
}

/// Sends Meta accepted whose outcome was never recorded (the process died during the
/// call, or the call timed out after Meta took it), recognised by the callback data
/// their statuses carry: the wamid goes on the message, which moves from `pending` to
/// `sent`, and the job is done, as the sender would have recorded it, so that nobody
/// sends it again. Returns how many sends were confirmed so.
async fn confirm_sends(conn: &mut PgConnection, rows: &[&StatusRow]) -> Result<u64, sqlx::Error> {
    let (messages, wamids): (Vec<Uuid>, Vec<&str>) = rows
        .iter()
        .filter_map(|r| r.sent_message.map(|m| (m, r.wamid.as_str())))
        .unzip();
    if messages.is_empty() {
        return Ok(0);
    }
    // The sender's record of the same send takes the wamid lock first too, so the
    // two are serialised; whichever comes second finds the job done.
    let confirmed = sqlx::query(
        "WITH u AS (SELECT DISTINCT ON (m) m, w FROM unnest($1::uuid[], $2::text[]) AS u(m, w) \
                    ORDER BY m), \
         j AS ( \
            UPDATE send_jobs s \
            SET done_at = now(), attempts = attempts + 1, locked_by = NULL, locked_until = NULL, \
                last_error = NULL \
            FROM u WHERE s.message_id = u.m AND s.done_at IS NULL \
            RETURNING s.message_id, u.w) \
         UPDATE messages m \
         SET content = m.content || jsonb_build_object('whatsappMessageId', j.w), \
             status = CASE WHEN m.status = 'pending' THEN 'sent'::messages_status_enum \
                           ELSE m.status END, \
             \"updatedAt\" = now() \
         FROM j WHERE m.id = j.message_id AND m.content ->> 'whatsappMessageId' IS NULL",
    )
    .bind(&messages)
    .bind(&wamids)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if confirmed > 0 {
        tracing::info!(
            sends = confirmed,
            "sends confirmed by Meta's status webhooks (their outcome had not been recorded)"
        );
    }
    Ok(confirmed)
}

/// Applies the statuses that arrived before their message was known, for each
/// `(message id, wamid)` the sender has just recorded (after setting the message's
/// own `sent`), so that an early `delivered` or `read` is neither lost nor
/// overwritten. Returns how many waiting statuses it weighed. The caller holds
/// these wamids' locks ([`lock_wamids`], taken before it recorded them).
pub async fn apply_early(
    conn: &mut PgConnection,
    sent: &[(Uuid, String)],
) -> Result<u64, sqlx::Error> {
    if sent.is_empty() {
        return Ok(0);
    }
    let wamids: Vec<&str> = sent.iter().map(|(_, w)| w.as_str()).collect();
    let waiting: Vec<(String, String, Value)> = sqlx::query_as(
        "SELECT wamid, status, errors FROM message_statuses \
         WHERE wamid = ANY($1) AND applied_at IS NULL ORDER BY received_at",
    )
    .bind(&wamids)
    .fetch_all(&mut *conn)
    .await?;
    if waiting.is_empty() {
        return Ok(0);
    }
    let by_wamid: HashMap<&str, Uuid> = sent.iter().map(|(id, w)| (w.as_str(), *id)).collect();
    let mut moves: Vec<(Uuid, &str, &Value)> = Vec::new();
    let mut applied: Vec<(&str, &str, Uuid)> = Vec::new();
    for (wamid, status, errors) in &waiting {
        let Some(&id) = by_wamid.get(wamid.as_str()) else {
            continue;
        };
        if is_message_status(status) {
            moves.push((id, status, errors));
        }
        applied.push((wamid, status, id));
    }
    move_forward(conn, &moves).await?;
    mark_applied(conn, &applied).await?;
    Ok(waiting.len() as u64)
}

/// [`apply_early`] for one message, its wamid's lock taken first.
pub async fn apply_early_statuses(
    conn: &mut PgConnection,
    message_id: Uuid,
    wamid: &str,
) -> Result<u64, sqlx::Error> {
    lock_wamids(conn, std::iter::once(wamid)).await?;
    apply_early(conn, &[(message_id, wamid.to_owned())]).await
}

/// Moves each message to the furthest of its statuses when that is forward (pending <
/// sent < delivered < read < played, the order of `messages_status_enum`); `failed`
/// is final and keeps Meta's errors in `content.error` (the first, as WhatsApp
/// Builder does) and `content.statusErrors` (all). Applying the furthest status is
/// what applying them one by one would come to, since each only moves forward.
async fn move_forward(
    conn: &mut PgConnection,
    moves: &[(Uuid, &str, &Value)],
) -> Result<(), sqlx::Error> {
    if moves.is_empty() {
        return Ok(());
    }
    let mut furthest: HashMap<Uuid, (&str, &Value)> = HashMap::new();
    for &(id, status, errors) in moves {
        let entry = furthest.entry(id).or_insert((status, errors));
        if rank(status) > rank(entry.0) {
            *entry = (status, errors);
        }
    }
    let mut ids = Vec::with_capacity(furthest.len());
    let mut statuses = Vec::with_capacity(furthest.len());
    let mut failures = Vec::with_capacity(furthest.len());
    let mut sorted: Vec<_> = furthest.into_iter().collect();
    sorted.sort_by_key(|(id, _)| *id);
    for (id, (status, errors)) in sorted {
        ids.push(id);
        statuses.push(status);
        // Only a failure changes the content: any other status leaves the jsonb
        // as it is rather than rebuilding it.
        failures.push((status == "failed").then(|| {
            let first = errors.get(0).cloned().unwrap_or(Value::Null);
            json!({"failed": true, "error": first, "statusErrors": errors})
        }));
    }
    sqlx::query(
        "UPDATE messages m SET status = u.status::messages_status_enum, \
                content = CASE WHEN u.failure IS NULL THEN m.content \
                               ELSE m.content || u.failure END, \
                \"updatedAt\" = now() \
         FROM unnest($1::uuid[], $2::text[], $3::jsonb[]) AS u(id, status, failure) \
         WHERE m.id = u.id AND m.status <> 'failed' \
           AND m.status < u.status::messages_status_enum",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&failures)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn mark_applied(
    conn: &mut PgConnection,
    applied: &[(&str, &str, Uuid)],
) -> Result<(), sqlx::Error> {
    if applied.is_empty() {
        return Ok(());
    }
    let wamids: Vec<&str> = applied.iter().map(|a| a.0).collect();
    let keys: Vec<&str> = applied.iter().map(|a| a.1).collect();
    let ids: Vec<Uuid> = applied.iter().map(|a| a.2).collect();
    sqlx::query(
        "UPDATE message_statuses s SET applied_at = now(), message_id = u.id \
         FROM unnest($1::text[], $2::text[], $3::uuid[]) AS u(wamid, status, id) \
         WHERE s.wamid = u.wamid AND s.status = u.status AND s.applied_at IS NULL",
    )
    .bind(&wamids)
    .bind(&keys)
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn is_message_status(status: &str) -> bool {
    matches!(status, "sent" | "delivered" | "read" | "played" | "failed")
}

/// Serialises everyone who looks at or writes the statuses of these wamids, until
/// the transaction ends. Taken in sorted order, so batches never deadlock on them.
pub async fn lock_wamids<'a>(
    conn: &mut PgConnection,
    wamids: impl Iterator<Item = &'a str>,
) -> Result<(), sqlx::Error> {
    let sorted: Vec<&str> = wamids.collect::<BTreeSet<_>>().into_iter().collect();
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock(hashtextextended(w, 7))) \
         FROM unnest($1::text[]) WITH ORDINALITY AS t(w, n)",
    )
    .bind(&sorted)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}
