//! `wabot_templates` (the business account's templates, as last synced) and
//! `wabot_sends` (idempotency keys of sends the business starts).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// One template row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TemplateRow {
    pub name: String,
    pub language: String,
    pub meta_id: Option<String>,
    pub category: Option<String>,
    pub status: String,
    pub parameter_format: String,
    pub components: Value,
    /// `whatsapp::templates::Parameters` as JSON.
    pub parameters: Value,
    pub reason: Option<String>,
    pub synced_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A `message_template_status_update` to apply: matched by Meta's id, else by name
/// and language.
#[derive(Debug, Clone)]
pub struct StatusUpdateRow {
    pub event: String,
    pub meta_id: Option<String>,
    pub name: Option<String>,
    pub language: Option<String>,
    pub reason: Option<String>,
}

const COLUMNS: &str = "name, language, meta_id, category, status, parameter_format, components, \
                       parameters, reason, synced_at, updated_at";

/// Replaces the catalogue with a full listing, in one transaction: every template
/// listed is inserted or updated, the ones Meta no longer lists are deleted.
/// Returns (stored, deleted).
pub async fn replace_all(pool: &PgPool, rows: &[TemplateRow]) -> Result<(u64, u64), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let languages: Vec<&str> = rows.iter().map(|r| r.language.as_str()).collect();
    let ids: Vec<Option<&str>> = rows.iter().map(|r| r.meta_id.as_deref()).collect();
    let categories: Vec<Option<&str>> = rows.iter().map(|r| r.category.as_deref()).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    let formats: Vec<&str> = rows.iter().map(|r| r.parameter_format.as_str()).collect();
    let components: Vec<&Value> = rows.iter().map(|r| &r.components).collect();
    let parameters: Vec<&Value> = rows.iter().map(|r| &r.parameters).collect();
    let stored = sqlx::query(
        "INSERT INTO wabot_templates (name, language, meta_id, category, status, \
                                      parameter_format, components, parameters) \
         SELECT DISTINCT ON (name, language) * FROM unnest($1::text[], $2::text[], $3::text[], \
                $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[]) \
             AS u(name, language, meta_id, category, status, parameter_format, components, \
                  parameters) \
         ON CONFLICT (name, language) DO UPDATE SET meta_id = excluded.meta_id, \
             category = excluded.category, status = excluded.status, \
             parameter_format = excluded.parameter_format, components = excluded.components, \
             parameters = excluded.parameters, \
             reason = CASE WHEN wabot_templates.status = excluded.status \
                           THEN wabot_templates.reason END, \
             synced_at = now(), \
             updated_at = CASE WHEN wabot_templates.status = excluded.status \
                                AND wabot_templates.components = excluded.components \
                               THEN wabot_templates.updated_at ELSE now() END",
    )
    .bind(&names)
    .bind(&languages)
    .bind(&ids)
    .bind(&categories)
    .bind(&statuses)
    .bind(&formats)
    .bind(&components)
    .bind(&parameters)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let deleted = sqlx::query(
        "DELETE FROM wabot_templates t WHERE NOT EXISTS ( \
             SELECT 1 FROM unnest($1::text[], $2::text[]) AS l(name, language) \
             WHERE l.name = t.name AND l.language = t.language)",
    )
    .bind(&names)
    .bind(&languages)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok((stored, deleted))
}

/// Applies status updates inside the caller's transaction (ingest's): the status
/// and reason of the template each names. An update for a template not synced yet
/// changes nothing (the next sync brings it). Returns the rows changed.
pub async fn apply_status_updates(
    conn: &mut PgConnection,
    updates: &[StatusUpdateRow],
) -> Result<u64, sqlx::Error> {
    if updates.is_empty() {
        return Ok(0);
    }
    let events: Vec<&str> = updates.iter().map(|u| u.event.as_str()).collect();
    let ids: Vec<Option<&str>> = updates.iter().map(|u| u.meta_id.as_deref()).collect();
    let names: Vec<Option<&str>> = updates.iter().map(|u| u.name.as_deref()).collect();
    let languages: Vec<Option<&str>> = updates.iter().map(|u| u.language.as_deref()).collect();
    let reasons: Vec<Option<&str>> = updates.iter().map(|u| u.reason.as_deref()).collect();
    // In webhook order: the last update of a template wins.
    let mut changed = 0;
    for i in 0..updates.len() {
        changed += sqlx::query(
            "UPDATE wabot_templates SET status = $1, reason = $5, updated_at = now() \
             WHERE ($2::text IS NOT NULL AND meta_id = $2) \
                OR ($2::text IS NULL AND name = $3 AND language = $4)",
        )
        .bind(events[i])
        .bind(ids[i])
        .bind(names[i])
        .bind(languages[i])
        .bind(reasons[i])
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(changed)
}

/// Every template, by name and language.
pub async fn list(pool: &PgPool) -> Result<Vec<TemplateRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM wabot_templates ORDER BY name, language"
    ))
    .fetch_all(pool)
    .await
}

/// The template `name` in `language`; with no language, the only one of that name
/// (`Err` lists the languages when there are several).
pub async fn find(
    pool: &PgPool,
    name: &str,
    language: Option<&str>,
) -> Result<Result<TemplateRow, String>, sqlx::Error> {
    let rows: Vec<TemplateRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM wabot_templates WHERE name = $1 \
           AND ($2::text IS NULL OR language = $2) ORDER BY language"
    ))
    .bind(name)
    .bind(language)
    .fetch_all(pool)
    .await?;
    Ok(match (rows.len(), language) {
        (1, _) => Ok(rows.into_iter().next().expect("one row")),
        (0, Some(l)) => Err(format!(
            "no template `{name}` in language `{l}` (run `wabot templates sync`?)"
        )),
        (0, None) => Err(format!(
            "no template `{name}` (run `wabot templates sync`?)"
        )),
        _ => Err(format!(
            "template `{name}` exists in several languages ({}): pass --language",
            rows.iter()
                .map(|r| r.language.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    })
}

/// The message an idempotency key already sent, if any.
pub async fn sent_with_key(pool: &PgPool, key: &str) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as("SELECT message_id, conversation_id FROM wabot_sends WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// Claims an idempotency key for `message_id` inside the caller's transaction; the
/// message already claimed by it when another send was first (and has committed).
pub async fn claim_key(
    conn: &mut PgConnection,
    key: &str,
    message_id: Uuid,
    conversation_id: Uuid,
) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO wabot_sends (idempotency_key, message_id, conversation_id) \
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(key)
    .bind(message_id)
    .bind(conversation_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(None);
    }
    sqlx::query_as("SELECT message_id, conversation_id FROM wabot_sends WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
}

/// The chatbot a conversation's bot messages come from (its newest context) and
/// that chatbot's `metadata.windowClosedTemplate`, with the context's variables:
/// read only when a message is due after the window closed.
pub async fn window_closed_template(
    pool: &PgPool,
    conversation_id: Uuid,
) -> Result<Option<(Value, Value)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT b.metadata -> 'windowClosedTemplate', c.variables \
         FROM conversation_contexts c JOIN chatbots b ON b.id = c.\"chatbotId\" \
         WHERE c.\"conversationId\" = $1 \
           AND jsonb_typeof(b.metadata -> 'windowClosedTemplate') = 'object' \
         ORDER BY c.\"isActive\" DESC, c.\"updatedAt\" DESC LIMIT 1",
    )
    .bind(conversation_id)
    .fetch_optional(pool)
    .await
}

/// What a template message reads as in `messages.content.text`: WhatsApp
/// Builder's schema has no template message type, so a template is stored as a
/// text row naming it, with the template itself under `content.template`.
pub fn template_preview(body: &Value) -> String {
    format!(
        "[template {}]",
        body["template"]["name"].as_str().unwrap_or_default()
    )
}

/// Puts a template in place of a message that cannot go (the window closed): the
/// job's body, the message's type and content (the original kept under
/// `replaced`, with why).
pub async fn replace_with_template(
    pool: &PgPool,
    job_id: i64,
    message_id: Uuid,
    body: &Value,
    why: &Value,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE send_jobs SET body = $2 WHERE id = $1 AND done_at IS NULL")
        .bind(job_id)
        .bind(body)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE messages SET type = 'text', \
             content = jsonb_build_object('text', $4::text, 'body', $4::text, \
                                          'template', $2::jsonb -> 'template', \
                                          'replaced', content, 'replacedBecause', $3::jsonb), \
             \"updatedAt\" = now() \
         WHERE id = $1",
    )
    .bind(message_id)
    .bind(body)
    .bind(why)
    .bind(template_preview(body))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// A template send the business starts, to store with its send job.
#[derive(Debug, Clone)]
pub struct NewSend {
    /// The business number's phone_number_id.
    pub business: String,
    /// The customer's wa_id, or their BSUID.
    pub customer: String,
    /// `customer` is a BSUID (a customer known only by username).
    pub bsuid: bool,
    pub message_id: Uuid,
    /// The Graph API body (`type: template`).
    pub body: Value,
}

/// Stores template sends inside the caller's transaction: each customer's
/// conversation (made when new, as ingest makes it), locked; the outbound
/// message (a text row naming the template, see [`template_preview`]) and its send
/// job, business-initiated (never sent to an opted-out customer), leased to `holder`
/// when `lease` is given. Returns each send's conversation, and the jobs.
pub async fn enqueue_sends(
    conn: &mut PgConnection,
    sends: &[NewSend],
    holder: &str,
    lease: Option<std::time::Duration>,
) -> Result<(Vec<Uuid>, Vec<crate::store::outbox::SendJob>), sqlx::Error> {
    let pairs: Vec<(String, String)> = sends
        .iter()
        .map(|s| (s.business.clone(), s.customer.clone()))
        .collect();
    let bsuids: std::collections::HashSet<String> = sends
        .iter()
        .filter(|s| s.bsuid)
        .map(|s| s.customer.clone())
        .collect();
    let found = crate::store::ingest::conversations_for(conn, &pairs, &bsuids).await?;
    let mut conversations = Vec::with_capacity(sends.len());
    let mut rows = Vec::with_capacity(sends.len());
    for (send, pair) in sends.iter().zip(&pairs) {
        let Some(&(conversation, business_user)) = found.get(pair) else {
            return Err(sqlx::Error::Protocol(format!(
                "no conversation could be made for +{} on business number {}",
                pair.1, pair.0
            )));
        };
        conversations.push(conversation);
        rows.push(crate::store::outbox::OutboundRow {
            message_id: send.message_id,
            conversation_id: conversation,
            sender_user_id: business_user,
            recipient: send.customer.clone(),
            kind: "text",
            // `body` and `text`, as wabot stores a text reply.
            content: serde_json::json!({
                "body": template_preview(&send.body),
                "text": template_preview(&send.body),
                "template": send.body["template"],
            }),
            body: send.body.clone(),
            business_initiated: true,
        });
    }
    crate::store::lock_conversations(conn, &conversations).await?;
    let jobs = crate::store::outbox::enqueue_batch(conn, &rows, holder, lease).await?;
    Ok((conversations, jobs))
}

/// What [`send_one`] stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SendOne {
    pub conversation_id: Uuid,
    pub message_id: Uuid,
    /// The idempotency key had sent it already: nothing new was stored.
    pub repeated: bool,
}

/// One template send in one transaction: the message and its unleased send job
/// (any sender takes it), the idempotency key claimed, and with `context` the
/// customer placed in a chatbot (the conversation's active context ended first; the
/// context's conversation id is filled in here) and its version stored.
pub async fn send_one(
    pool: &PgPool,
    send: &NewSend,
    key: Option<&str>,
    context: Option<(
        crate::store::contexts::ContextRow,
        crate::store::versions::VersionRow,
    )>,
) -> Result<SendOne, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (conversations, _) = enqueue_sends(&mut tx, std::slice::from_ref(send), "", None).await?;
    let conversation_id = conversations[0];
    if let Some(key) = key {
        if let Some((message_id, conversation_id)) =
            claim_key(&mut tx, key, send.message_id, conversation_id).await?
        {
            tx.rollback().await?;
            return Ok(SendOne {
                conversation_id,
                message_id,
                repeated: true,
            });
        }
    }
    if let Some((mut row, version)) = context {
        row.conversation_id = conversation_id;
        crate::store::contexts::deactivate(
            &mut tx,
            conversation_id,
            "stopped",
            "restarted",
            Utc::now(),
        )
        .await?;
        crate::store::versions::insert_batch(&mut tx, &[&version]).await?;
        crate::store::contexts::save(&mut tx, &row).await?;
    }
    tx.commit().await?;
    Ok(SendOne {
        conversation_id,
        message_id: send.message_id,
        repeated: false,
    })
}

/// Keeps a send job's finished body (a chatbot's template made into Meta's shape).
pub async fn set_job_body(pool: &PgPool, job_id: i64, body: &Value) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE send_jobs SET body = $2 WHERE id = $1 AND done_at IS NULL")
        .bind(job_id)
        .bind(body)
        .execute(pool)
        .await?;
    Ok(())
}
