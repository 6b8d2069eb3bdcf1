//! An operator's opt-out and opt-in of a customer, per business number
//! (`wabot customer opt-out|opt-in`, `POST /v1/customers/{phone}/opt-out|opt-in`).

use anyhow::Context as _;
use serde::Serialize;
use sqlx::PgPool;

use crate::config::Config;
use crate::store;
use crate::store::events::Subscribed;
use crate::store::people::OptOut;

const MIGRATED: &str = "is the database migrated? `wabot migrate run`";

/// What an opt-out or opt-in did on one business number.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Change {
    /// The customer as their conversations are keyed (wa_id, or BSUID).
    pub customer: String,
    pub business_phone_number_id: String,
    /// Whether this call changed anything.
    pub changed: bool,
    /// The opt-out that was there already (an opt-out that changed nothing), or the
    /// one removed (an opt-in that did).
    #[schema(value_type = Option<Object>)]
    pub opt_out: Option<OptOut>,
}

/// Opts `phone` (digits) out of what `business` starts; by default every business
/// number the customer has a conversation with, else the configured one.
pub async fn opt_out(
    pool: &PgPool,
    config: &Config,
    phone: &str,
    business: Option<&str>,
    events: Subscribed,
) -> anyhow::Result<Vec<Change>> {
    let key = key_of(pool, phone).await?;
    let phone = key.as_str();
    let businesses = business_numbers(pool, config, phone, business, true)
        .await
        .with_context(|| format!("cannot read the customer's conversations ({MIGRATED})"))?;
    let mut out = Vec::new();
    for business in businesses {
        let before = store::people::opt_out(pool, &business, phone, events)
            .await
            .with_context(|| format!("cannot opt the customer out ({MIGRATED})"))?;
        out.push(Change {
            customer: phone.to_owned(),
            business_phone_number_id: business,
            changed: before.is_none(),
            opt_out: before,
        });
    }
    Ok(out)
}

/// Opts `phone` in again; by default on every number they opted out of.
pub async fn opt_in(
    pool: &PgPool,
    config: &Config,
    phone: &str,
    business: Option<&str>,
    events: Subscribed,
) -> anyhow::Result<Vec<Change>> {
    let key = key_of(pool, phone).await?;
    let phone = key.as_str();
    let businesses = business_numbers(pool, config, phone, business, false)
        .await
        .with_context(|| format!("cannot read the customer's opt-outs ({MIGRATED})"))?;
    let mut out = Vec::new();
    for business in businesses {
        let gone = store::people::opt_in(pool, &business, phone, events)
            .await
            .with_context(|| format!("cannot opt the customer in ({MIGRATED})"))?;
        out.push(Change {
            customer: phone.to_owned(),
            business_phone_number_id: business,
            changed: gone.is_some(),
            opt_out: gone,
        });
    }
    Ok(out)
}

/// Opt-outs are kept by the conversation's key: a BSUID names the customer whose
/// conversation is keyed by their number, and the other way round.
async fn key_of(pool: &PgPool, who: &str) -> anyhow::Result<String> {
    Ok(store::ops::customer_key(pool, who)
        .await
        .with_context(|| format!("cannot read the customer's conversations ({MIGRATED})"))?
        .unwrap_or_else(|| who.to_owned()))
}

/// A customer's wa_id as a phone number; a BSUID as it is.
fn shown(who: &str) -> String {
    if crate::whatsapp::webhook::is_bsuid(who) {
        who.to_owned()
    } else {
        format!("+{who}")
    }
}

/// The business numbers the command applies to: the one given; else, to opt out,
/// those the customer has conversations with, else the configured number; to opt
/// in, those the customer is opted out of.
async fn business_numbers(
    pool: &PgPool,
    config: &Config,
    phone: &str,
    given: Option<&str>,
    out: bool,
) -> anyhow::Result<Vec<String>> {
    if let Some(given) = given.map(str::trim) {
        if given.is_empty() || given.len() > 20 || !given.chars().all(|c| c.is_ascii_digit()) {
            anyhow::bail!("business `{given}` is not a phone_number_id (digits)");
        }
        return Ok(vec![given.to_owned()]);
    }
    if !out {
        return Ok(store::people::opt_outs(pool, phone)
            .await?
            .into_iter()
            .map(|o| o.business_phone_number_id)
            .collect());
    }
    let known = store::people::business_numbers_of(pool, phone).await?;
    if !known.is_empty() {
        return Ok(known);
    }
    let configured = match store::whatsapp_config::load_active(pool).await? {
        Some(row) => Some(row.phone_number_id),
        None => config.whatsapp.phone_number_id.clone(),
    };
    match configured.filter(|n| !n.trim().is_empty()) {
        Some(number) => Ok(vec![number]),
        None => anyhow::bail!(
            "{} has no conversation and no business number is configured: name one with \
             --business PHONE_NUMBER_ID",
            shown(phone)
        ),
    }
}
