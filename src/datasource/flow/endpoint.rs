//! Answers a decrypted Flows endpoint request: the flow token's live context, the
//! screen to show (Meta's routing, `whatsapp::flows`), its fields filled from data
//! sources ([`super::screens`]) within the deadline, and the user's submissions kept
//! per token (`store::flows` sessions) so that later screens and the completion see
//! all of them.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use sqlx::PgPool;

use super::screens;
use super::{initial_data, initial_screen};
use crate::datasource::DataSourceClient;
use crate::engine::context::parse_flow_token;
use crate::store;
use crate::store::flows::TokenTarget;
use crate::whatsapp::flows::{self as meta, Action, FlowRequest, Next};

/// Time kept back from the deadline for the answer's own work (encrypting, writing).
const ANSWER_MARGIN: Duration = Duration::from_millis(25);

/// Why a request got no screen.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("the flow token maps to no live conversation context")]
    DeadToken,
    #[error("the Flow has no screen to start on (no whatsapp_flows row or flowInitialScreen)")]
    NoScreen,
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

/// What the endpoint needs besides the request.
#[derive(Clone, Copy)]
pub struct Endpoint<'a> {
    pub pool: &'a PgPool,
    pub datasources: &'a DataSourceClient,
    /// When the answer must be on its way.
    pub deadline: Instant,
}

impl Endpoint<'_> {
    /// The answer's JSON (before encryption).
    pub async fn answer(&self, request: &FlowRequest) -> Result<Value, FlowError> {
        match request.kind() {
            Action::Ping => return Ok(meta::ping_response()),
            Action::ErrorNotification => {
                let (error, message) = request.client_error();
                tracing::warn!(%error, %message, "the Flow client reported an error");
                return Ok(meta::acknowledged());
            }
            _ => {}
        }
        let token = request.flow_token.as_deref().unwrap_or_default();
        let target = self.live_target(token).await?;
        match request.kind() {
            Action::Init => self.init(token, &target).await,
            Action::Back => self.back(token, &target, request).await,
            _ => self.exchange(token, &target, request).await,
        }
    }

    async fn live_target(&self, token: &str) -> Result<TokenTarget, FlowError> {
        let (context_id, node) = parse_flow_token(token).ok_or(FlowError::DeadToken)?;
        store::flows::token_target(self.pool, context_id, node)
            .await?
            .ok_or(FlowError::DeadToken)
    }

    async fn init(&self, token: &str, target: &TokenTarget) -> Result<Value, FlowError> {
        let flow_json = flow_json(target);
        let screen = initial_screen(&flow_json, &target.node_data).ok_or(FlowError::NoScreen)?;
        store::flows::session_start(self.pool, token, target.context_id, &json!({})).await?;
        let mut data = initial_data(&target.node_data);
        let input = Value::Object(data.clone());
        let filled = self.fill(target, &screen, true, &input).await;
        data.extend(filled);
        Ok(meta::screen_response(&screen, data))
    }

    async fn back(
        &self,
        token: &str,
        target: &TokenTarget,
        request: &FlowRequest,
    ) -> Result<Value, FlowError> {
        let flow_json = flow_json(target);
        let screen = request
            .screen
            .clone()
            .or_else(|| initial_screen(&flow_json, &target.node_data))
            .ok_or(FlowError::NoScreen)?;
        let gathered =
            store::flows::session_merge(self.pool, token, target.context_id, &json!({})).await?;
        Ok(self
            .serve_screen(target, &flow_json, &screen, &gathered)
            .await)
    }

    async fn exchange(
        &self,
        token: &str,
        target: &TokenTarget,
        request: &FlowRequest,
    ) -> Result<Value, FlowError> {
        let flow_json = flow_json(target);
        let submitted = request.submitted();
        let gathered =
            store::flows::session_merge(self.pool, token, target.context_id, &submitted).await?;
        let current = request.screen.as_deref().unwrap_or_default();
        match meta::next_screen(&flow_json, current, &submitted) {
            Next::Complete => {
                store::flows::session_end(self.pool, token).await?;
                let params = gathered.as_object().cloned().unwrap_or_default();
                Ok(meta::completion_response(params, token))
            }
            Next::Screen(next) => Ok(self
                .serve_screen(target, &flow_json, &next, &gathered)
                .await),
        }
    }

    /// The answer that shows `screen`: its data sources filled, what the user picked
    /// earlier carried over.
    async fn serve_screen(
        &self,
        target: &TokenTarget,
        flow_json: &Value,
        screen: &str,
        gathered: &Value,
    ) -> Value {
        let initial = initial_screen(flow_json, &target.node_data);
        let is_initial = initial.as_deref() == Some(screen);
        let data = self.fill(target, screen, is_initial, gathered).await;
        meta::screen_response(screen, carried(flow_json, screen, gathered, data))
    }

    /// The data of `screen` from its components, `error_message` included when some
    /// failed, within what is left before the deadline.
    async fn fill(
        &self,
        target: &TokenTarget,
        screen: &str,
        initial: bool,
        input: &Value,
    ) -> Map<String, Value> {
        let Some(flow) = target.flow.as_ref() else {
            return Map::new();
        };
        let all = screens::components(flow);
        let wanted = screens::components_for(&all, screen, initial, input);
        if wanted.is_empty() {
            return Map::new();
        }
        let budget = self
            .deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(ANSWER_MARGIN);
        let resolved =
            screens::resolve_screen(self.pool, self.datasources, &wanted, input, budget).await;
        let mut data = resolved.data;
        if let Some(message) = resolved.error_message {
            data.insert("error_message".into(), Value::String(message));
        }
        data
    }
}

fn flow_json(target: &TokenTarget) -> Value {
    target
        .flow
        .as_ref()
        .map(|f| f.flow_json.clone())
        .unwrap_or(Value::Null)
}

/// Adds the gathered values that `screen` declares in its `data` schema (a summary
/// screen showing earlier picks), without overwriting resolved fields.
fn carried(
    flow_json: &Value,
    screen: &str,
    gathered: &Value,
    mut data: Map<String, Value>,
) -> Map<String, Value> {
    if let (Some(declared), Some(gathered)) =
        (meta::declared_data(flow_json, screen), gathered.as_object())
    {
        for (name, value) in gathered {
            if declared.contains_key(name) && !data.contains_key(name) {
                data.insert(name.clone(), value.clone());
            }
        }
    }
    data
}
