//! The `whatsapp_config` table: the business number's credentials, of which at most
//! one row is active (a partial unique index enforces it).

use secrecy::SecretString;
use sqlx::PgPool;
use uuid::Uuid;

/// The active configuration row, secrets wrapped.
#[derive(Debug, Clone)]
pub struct ActiveConfig {
    pub id: Uuid,
    pub phone_number_id: String,
    pub business_account_id: String,
    pub access_token: SecretString,
    pub webhook_verify_token: SecretString,
    pub app_secret: Option<SecretString>,
    pub api_version: String,
}

type ConfigRow = (Uuid, String, String, String, String, Option<String>, String);

/// The row with `is_active = true`, if there is one.
#[tracing::instrument(skip_all)]
pub async fn load_active(pool: &PgPool) -> Result<Option<ActiveConfig>, sqlx::Error> {
    let row: Option<ConfigRow> = sqlx::query_as(
        "SELECT id, phone_number_id, business_account_id, access_token, \
                    webhook_verify_token, app_secret, api_version \
             FROM whatsapp_config WHERE is_active = true LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(id, phone_number_id, business_account_id, token, verify, secret, api_version)| {
            ActiveConfig {
                id,
                phone_number_id,
                business_account_id,
                access_token: SecretString::from(token),
                webhook_verify_token: SecretString::from(verify),
                app_secret: secret.filter(|s| !s.is_empty()).map(SecretString::from),
                api_version,
            }
        },
    ))
}

/// What `insert` stores; used by tests and set-up tooling. Debug hides the secrets.
#[derive(Clone)]
pub struct NewConfig<'a> {
    pub phone_number_id: &'a str,
    pub business_account_id: &'a str,
    pub access_token: &'a str,
    pub webhook_verify_token: &'a str,
    pub app_secret: Option<&'a str>,
    pub is_active: bool,
}

impl std::fmt::Debug for NewConfig<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewConfig")
            .field("phone_number_id", &self.phone_number_id)
            .field("business_account_id", &self.business_account_id)
            .field("access_token", &"<redacted>")
            .field("webhook_verify_token", &"<redacted>")
            .field("app_secret", &self.app_secret.map(|_| "<redacted>"))
            .field("is_active", &self.is_active)
            .finish()
    }
}

/// Inserts a configuration row; a second active row is refused by the database.
pub async fn insert(pool: &PgPool, new: &NewConfig<'_>) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO whatsapp_config \
            (phone_number_id, business_account_id, access_token, webhook_verify_token, \
             app_secret, is_active) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(new.phone_number_id)
    .bind(new.business_account_id)
    .bind(new.access_token)
    .bind(new.webhook_verify_token)
    .bind(new.app_secret)
    .bind(new.is_active)
    .fetch_one(pool)
    .await
}
