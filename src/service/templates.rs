//! The synced template catalogue as `wabot templates list` and `GET /v1/templates`
//! show it (syncing is `worker::templates::sync`, which both callers use).

use serde::Serialize;
use sqlx::PgPool;

use crate::store;
use crate::whatsapp::templates::Parameters;

/// One template of the catalogue.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateInfo {
    pub name: String,
    pub language: String,
    /// Meta's review status: `APPROVED` templates can be sent.
    pub status: String,
    pub category: Option<String>,
    /// `POSITIONAL` (`{{1}}`) or `NAMED` (`{{first_name}}`).
    pub parameter_format: String,
    /// The parameters a send fills, by key (`first_name`, `1`, `header.1`,
    /// `button.0`, `header` for a media link); an optional one is in brackets.
    pub parameters: Vec<String>,
    /// Why Meta rejected or paused it.
    pub reason: Option<String>,
    /// Meta's id of the template.
    pub id: Option<String>,
}

/// Every synced template, by name and language.
pub async fn list(pool: &PgPool) -> Result<Vec<TemplateInfo>, sqlx::Error> {
    let rows = store::templates::list(pool).await?;
    Ok(rows
        .into_iter()
        .map(|t| {
            let params: Parameters = serde_json::from_value(t.parameters).unwrap_or_default();
            let parameters = params
                .keys()
                .into_iter()
                .map(|(k, required)| if required { k } else { format!("[{k}]") })
                .collect();
            TemplateInfo {
                name: t.name,
                language: t.language,
                status: t.status,
                category: t.category,
                parameter_format: t.parameter_format,
                parameters,
                reason: t.reason,
                id: t.meta_id,
            }
        })
        .collect())
}
