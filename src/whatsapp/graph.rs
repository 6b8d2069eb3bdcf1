//! The Graph API client: sends messages, marks them read and shows the typing
//! indicator.
//!
//! One `reqwest::Client` for the whole process, with the timeouts from the
//! configuration. The token and phone number id are passed per call, because they
//! come from `CredentialStore` and may be rotated while the process runs. The token is
//! exposed only where the `Authorization` header is built and is never logged.
//!
//! Meta's errors are classified by their `code`, not by the HTTP status (PROTOCOL.md
//! "Sending"): the same 400 can mean "retry later" (130429) or "never" (131047).

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::WhatsAppConfig;
use crate::credentials::Credentials;

/// What Meta answered to an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The wamid of the message we sent.
    pub wamid: String,
    /// The WhatsApp id Meta resolved the recipient to, when it said.
    pub wa_id: Option<String>,
    /// The BSUID Meta answers instead for a message sent to one (`recipient`).
    pub user_id: Option<String>,
}

/// The `reason` kept on a message that failed with 131062.
pub const BSUID_NOT_SUPPORTED_REASON: &str =
    "this message cannot be sent to a customer known only by username (BSUID)";

/// Meta's code for "a BSUID recipient is not supported for this message" (some
/// authentication templates): permanent.
pub const BSUID_NOT_SUPPORTED: i64 = 131062;

/// Meta's error object: `{error:{message,type,code,error_subcode,error_data,fbtrace_id}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaError {
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_subcode: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<MetaErrorData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaErrorData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// Why a Graph API call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Meta answered with its error object.
    #[error("Graph API error {} (HTTP {status}): {}", .error.code, .error.message)]
    Meta { status: u16, error: MetaError },
    /// Meta answered something that is not its error object.
    #[error("Graph API answered HTTP {status} with an unexpected body")]
    Unexpected { status: u16, body: String },
    /// The call took longer than `WABOT_GRAPH_TIMEOUT_MS`.
    #[error("Graph API call timed out")]
    Timeout,
    /// The connection could not be made or broke.
    #[error("cannot reach the Graph API: {0}")]
    Transport(String),
    /// No token or phone number id is configured.
    #[error("no WhatsApp credentials: {0} is not configured")]
    NotConfigured(&'static str),
}

/// What to do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again later; the schedule says how fast to back off.
    Retryable(Backoff),
    /// Do not try again: the message fails with the error kept.
    Permanent,
    /// The token is expired or revoked (190), or there are no credentials: hold all
    /// sending until the credentials change.
    TokenInvalid,
}

/// How the delay grows between attempts of a retryable error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// base · 2ⁿ, for throughput limits, server errors and timeouts.
    Exponential,
    /// base · 4ⁿ: Meta's advice for the per-user pair rate limit (131056).
    PairRate,
}

impl GraphError {
    /// Why the call never reached Meta (a connection that could not be made or
    /// broke, a name that did not resolve, TLS, no answer in time), or `None` when
    /// Meta answered: any answer, even an error, proves the Graph API reachable.
    pub fn unreachable_because(&self) -> Option<String> {
        match self {
            GraphError::Transport(why) => Some(why.clone()),
            GraphError::Timeout => Some("no answer within WABOT_GRAPH_TIMEOUT_MS".to_owned()),
            _ => None,
        }
    }

    /// Classifies the error the way PROTOCOL.md says: by Meta's code first, and by
    /// the HTTP status only when Meta gave no code we know.
    pub fn class(&self) -> ErrorClass {
        match self {
            GraphError::Meta { status, error } => classify(*status, error.code),
            GraphError::Unexpected { status, .. } => match *status {
                401 => ErrorClass::TokenInvalid,
                429 | 500..=599 => ErrorClass::Retryable(Backoff::Exponential),
                _ => ErrorClass::Permanent,
            },
            GraphError::Timeout | GraphError::Transport(_) => {
                ErrorClass::Retryable(Backoff::Exponential)
            }
            GraphError::NotConfigured(_) => ErrorClass::TokenInvalid,
        }
    }

    /// The error as JSON, to keep on the message and the job. Meta's own error
    /// object is kept as Meta sent it.
    pub fn to_json(&self) -> Value {
        match self {
            GraphError::Meta { status, error } => {
                let mut value = serde_json::to_value(error).unwrap_or_else(|_| json!({}));
                if let Some(map) = value.as_object_mut() {
                    map.insert("httpStatus".to_owned(), json!(status));
                    if error.code == BSUID_NOT_SUPPORTED {
                        map.insert("reason".to_owned(), json!(BSUID_NOT_SUPPORTED_REASON));
                    }
                }
                value
            }
            GraphError::Unexpected { status, body } => json!({
                "message": "unexpected Graph API response",
                "httpStatus": status,
                // A body too long to be an error object is cut; it is only a clue.
                "body": body.chars().take(1000).collect::<String>(),
            }),
            // `reason` names the kind of failure in a word or two, so that `wabot
            // status` counts a DNS failure and a refused connection as one kind of
            // error; `message` says exactly why.
            GraphError::Timeout => {
                json!({ "reason": "Graph API timeout", "message": self.to_string() })
            }
            GraphError::Transport(_) => {
                json!({ "reason": "Graph API unreachable", "message": self.to_string() })
            }
            GraphError::NotConfigured(_) => {
                json!({ "reason": "no WhatsApp credentials", "message": self.to_string() })
            }
        }
    }

    /// Meta's error code, when there is one.
    pub fn code(&self) -> Option<i64> {
        match self {
            GraphError::Meta { error, .. } => Some(error.code),
            _ => None,
        }
    }
}

/// The decision table of PROTOCOL.md "Sending", plus the documented rate-limit codes
/// that arrive with an HTTP 400 (4: application, 80007: WABA) so that a throttled
/// message is not failed for good.
fn classify(status: u16, code: i64) -> ErrorClass {
    match code {
        190 => ErrorClass::TokenInvalid,
        131056 => ErrorClass::Retryable(Backoff::PairRate),
        // 1 and 2 are Meta's "unknown" and "service temporarily unavailable".
        1 | 2 | 4 | 80007 | 130429 | 131000 | 131057 => ErrorClass::Retryable(Backoff::Exponential),
        100 | 131008 | 131009 | 131026 | 131047 | 131051 | BSUID_NOT_SUPPORTED => {
            ErrorClass::Permanent
        }
        _ if (500..=599).contains(&status) => ErrorClass::Retryable(Backoff::Exponential),
        _ => ErrorClass::Permanent,
    }
}

/// The Graph API client.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: String,
    version: String,
    timeout: Duration,
}

impl GraphClient {
    /// Builds the one client of the process from `whatsapp.graph_*`.
    pub fn new(config: &WhatsAppConfig) -> Result<GraphClient, reqwest::Error> {
        let timeout = Duration::from_millis(config.graph_timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("wabot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(GraphClient {
            http,
            base: config.graph_api_base.trim_end_matches('/').to_owned(),
            version: config.graph_api_version.clone(),
            timeout,
        })
    }

    /// The total timeout of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one message: `body` is a complete Graph API body, as rendered by
    /// `whatsapp::outbound::graph_body`.
    pub async fn send_message(
        &self,
        credentials: &Credentials,
        body: &Value,
    ) -> Result<Accepted, GraphError> {
        let (status, text) = self.post_messages(credentials, body).await?;
        let parsed: SendResponse =
            serde_json::from_str(&text).map_err(|_| GraphError::Unexpected {
                status: status.as_u16(),
                body: text.clone(),
            })?;
        let wamid = parsed
            .messages
            .into_iter()
            .next()
            .map(|m| m.id)
            .filter(|id| !id.is_empty())
            .ok_or(GraphError::Unexpected {
                status: status.as_u16(),
                body: text,
            })?;
        let contact = parsed.contacts.into_iter().next();
        Ok(Accepted {
            wamid,
            user_id: contact.as_ref().and_then(|c| c.user_id.clone()),
            wa_id: contact.and_then(|c| c.wa_id),
        })
    }

    /// Marks an inbound message read (the customer sees blue ticks).
    pub async fn mark_read(
        &self,
        credentials: &Credentials,
        message_id: &str,
    ) -> Result<(), GraphError> {
        self.post_success(credentials, &read_receipt(message_id))
            .await
    }

    /// Marks an inbound message read and shows the typing indicator, which Meta
    /// clears at our next message or after 25 seconds.
    pub async fn show_typing(
        &self,
        credentials: &Credentials,
        message_id: &str,
    ) -> Result<(), GraphError> {
        let mut body = read_receipt(message_id);
        body["typing_indicator"] = json!({ "type": "text" });
        self.post_success(credentials, &body).await
    }

    /// GETs `/{version}/{path}` with `query` (the template listing): the answer's
    /// JSON, or the error, classified as a send's would be.
    pub async fn get_json(
        &self,
        credentials: &Credentials,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, GraphError> {
        let token = credentials
            .access_token
            .as_ref()
            .ok_or(GraphError::NotConfigured("the access token"))?;
        let version = credentials.api_version.as_deref().unwrap_or(&self.version);
        let url = format!("{}/{version}/{path}", self.base);
        let response = self
            .http
            .get(&url)
            .bearer_auth(token.expose_secret())
            .query(query)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let text = response.text().await.map_err(transport_error)?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|_| GraphError::Unexpected {
                status: status.as_u16(),
                body: text,
            });
        }
        Err(match serde_json::from_str::<ErrorEnvelope>(&text) {
            Ok(envelope) => GraphError::Meta {
                status: status.as_u16(),
                error: envelope.error,
            },
            Err(_) => GraphError::Unexpected {
                status: status.as_u16(),
                body: text,
            },
        })
    }

    /// POSTs a body Meta answers with `{"success": true}`.
    async fn post_success(
        &self,
        credentials: &Credentials,
        body: &Value,
    ) -> Result<(), GraphError> {
        let (status, text) = self.post_messages(credentials, body).await?;
        match serde_json::from_str::<Value>(&text) {
            Ok(v) if v.get("success").and_then(Value::as_bool) == Some(true) => Ok(()),
            _ => Err(GraphError::Unexpected {
                status: status.as_u16(),
                body: text,
            }),
        }
    }

    /// POSTs to `/{version}/{phone_number_id}/messages` (the credentials' version,
    /// else the configured one); a 2xx answer's status and
    /// body, or the error.
    async fn post_messages(
        &self,
        credentials: &Credentials,
        body: &Value,
    ) -> Result<(StatusCode, String), GraphError> {
        let token = credentials
            .access_token
            .as_ref()
            .ok_or(GraphError::NotConfigured("the access token"))?;
        let phone_number_id = credentials
            .phone_number_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .ok_or(GraphError::NotConfigured("the phone number id"))?;
        // The active whatsapp_config row's version wins over the configured one.
        let version = credentials.api_version.as_deref().unwrap_or(&self.version);
        let url = format!("{}/{version}/{phone_number_id}/messages", self.base);
        let response = self
            .http
            .post(&url)
            .bearer_auth(token.expose_secret())
            .json(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let text = response.text().await.map_err(transport_error)?;
        if status.is_success() {
            return Ok((status, text));
        }
        Err(match serde_json::from_str::<ErrorEnvelope>(&text) {
            Ok(envelope) => GraphError::Meta {
                status: status.as_u16(),
                error: envelope.error,
            },
            Err(_) => GraphError::Unexpected {
                status: status.as_u16(),
                body: text,
            },
        })
    }
}

/// A failed call as text a person can act on. reqwest's own message is only "error
/// sending request"; why (the DNS lookup failed, the connection was refused, the
/// certificate was not trusted) is in its sources, so the whole chain is kept. The
/// URL holds no secret (the token travels in a header) but is left out anyway: the
/// phone number id adds nothing to the log line and the causes carry no URL.
fn transport_error(e: reqwest::Error) -> GraphError {
    if e.is_timeout() {
        return GraphError::Timeout;
    }
    GraphError::Transport(crate::egress::error_text(e))
}

#[derive(Deserialize)]
struct SendResponse {
    #[serde(default)]
    contacts: Vec<SendContact>,
    #[serde(default)]
    messages: Vec<SendMessageId>,
}

#[derive(Deserialize)]
struct SendContact {
    #[serde(default)]
    wa_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct SendMessageId {
    #[serde(default)]
    id: String,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: MetaError,
}

/// The body that marks an inbound message read.
fn read_receipt(message_id: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": message_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(status: u16, code: i64) -> GraphError {
        GraphError::Meta {
            status,
            error: MetaError {
                code,
                ..MetaError::default()
            },
        }
    }

    /// A throughput error body parses and is retried, and what is kept has its code,
    /// the HTTP status and Meta's details.
    fn check_throughput_error(text: &str, subcode: i64, trace: &str, details: &str) {
        let envelope: ErrorEnvelope = serde_json::from_str(text).expect("the body parses");
        let error = envelope.error;
        assert_eq!(error.code, 130429);
        assert_eq!(error.error_subcode, Some(subcode));
        assert_eq!(error.kind.as_deref(), Some("OAuthException"));
        assert_eq!(error.fbtrace_id.as_deref(), Some(trace));
        assert_eq!(
            error.error_data.as_ref().and_then(|d| d.details.as_deref()),
            Some(details)
        );
        // Meta sends this code with a 400: the code decides, not the status.
        let err = GraphError::Meta { status: 400, error };
        assert_eq!(err.class(), ErrorClass::Retryable(Backoff::Exponential));
        let kept = err.to_json();
        assert_eq!(kept["code"], 130429);
        assert_eq!(kept["httpStatus"], 400);
        assert_eq!(kept["error_data"]["details"], details);
    }

    #[test]
    fn a_throughput_error_is_parsed_and_retried() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/graph/error_throughput_130429.json"
        );
        let text = std::fs::read_to_string(path).expect("the fixture is readable");
        check_throughput_error(
            &text,
            2494100,
            "FIXTURE-trace-0001",
            "The phone number sent more messages than its throughput allows.",
        );
        // Meta's own example, when the reference material is beside the checkout.
        let meta = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/whatsapp/samples/meta-docs/api_error_response_130429.json"
        );
        if let Ok(text) = std::fs::read_to_string(meta) {
            check_throughput_error(
                &text,
                2494055,
                "Az8or2yhqkZfEZ-_4Qn_Bam",
                "Cloud API message throughput has been reached.",
            );
        }
    }

    #[test]
    fn a_bsuid_recipient_refused_keeps_its_reason() {
        let kept = meta(400, BSUID_NOT_SUPPORTED).to_json();
        assert_eq!(kept["code"], 131062);
        assert_eq!(kept["reason"], BSUID_NOT_SUPPORTED_REASON);
        assert!(meta(400, 131047).to_json().get("reason").is_none());
    }

    #[test]
    fn errors_are_classified_by_code_before_status() {
        use ErrorClass::*;
        assert_eq!(meta(400, 131056).class(), Retryable(Backoff::PairRate));
        assert_eq!(meta(500, 131000).class(), Retryable(Backoff::Exponential));
        assert_eq!(meta(400, 131057).class(), Retryable(Backoff::Exponential));
        assert_eq!(meta(401, 190).class(), TokenInvalid);
        assert_eq!(meta(400, 190).class(), TokenInvalid);
        for code in [131047, 131026, 131051, 100, 131008, 131009, 131062] {
            assert_eq!(meta(400, code).class(), Permanent, "code {code}");
            // A permanent code stays permanent even behind a 5xx.
            assert_eq!(meta(500, code).class(), Permanent, "code {code} on 500");
        }
        assert_eq!(meta(503, 99999).class(), Retryable(Backoff::Exponential));
        assert_eq!(meta(403, 99999).class(), Permanent);
        assert_eq!(GraphError::Timeout.class(), Retryable(Backoff::Exponential));
        assert_eq!(
            GraphError::Transport("refused".into()).class(),
            Retryable(Backoff::Exponential)
        );
        assert_eq!(
            GraphError::NotConfigured("the access token").class(),
            TokenInvalid
        );
        let html = |status| GraphError::Unexpected {
            status,
            body: "<html>".into(),
        };
        assert_eq!(html(502).class(), Retryable(Backoff::Exponential));
        assert_eq!(html(401).class(), TokenInvalid);
        assert_eq!(html(404).class(), Permanent);
    }

    const TOKEN: &str = "EAAG-secret-token-never-shown";

    /// Sends one message to `base` and returns the error, which must be a transport
    /// error (neither Meta's nor a timeout).
    async fn unreachable(base: &str) -> GraphError {
        let client = GraphClient::new(&WhatsAppConfig {
            graph_api_base: base.to_owned(),
            graph_timeout_ms: 5_000,
            ..WhatsAppConfig::default()
        })
        .expect("client");
        let credentials = Credentials {
            source: crate::credentials::Source::Environment,
            phone_number_id: Some("1234567890".into()),
            business_account_id: None,
            access_token: Some(TOKEN.to_owned().into()),
            app_secret: None,
            verify_token: None,
            api_version: None,
        };
        let body = json!({"messaging_product": "whatsapp", "to": "905551234567"});
        let error = client
            .send_message(&credentials, &body)
            .await
            .expect_err("nothing answers");
        assert!(matches!(error, GraphError::Transport(_)), "{error:?}");
        error
    }

    /// What a person reads about the error: the log line and the error kept on the
    /// message. Neither may hold the token or Rust's Option text.
    fn readable(error: &GraphError) -> (String, String) {
        let (shown, kept) = (error.to_string(), error.to_json().to_string());
        for text in [&shown, &kept] {
            assert!(!text.contains(TOKEN), "{text}");
            assert!(!text.contains("Some(") && !text.contains("None"), "{text}");
        }
        assert_eq!(error.to_json()["message"], shown.as_str());
        assert_eq!(error.to_json()["reason"], "Graph API unreachable");
        (shown, kept)
    }

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        // A port that was just free: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let error = unreachable(&format!("http://127.0.0.1:{port}")).await;
        let (shown, kept) = readable(&error);
        assert!(shown.starts_with("cannot reach the Graph API: "), "{shown}");
        assert!(shown.contains("Connection refused"), "{shown}");
        assert!(kept.contains("Connection refused"), "{kept}");
        assert_eq!(error.class(), ErrorClass::Retryable(Backoff::Exponential));
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_says_so() {
        // `.invalid` never resolves (RFC 6761).
        let error = unreachable("http://wabot-no-such-host.invalid").await;
        let (shown, kept) = readable(&error);
        assert!(shown.contains("dns error"), "{shown}");
        // The resolver's own words follow: why the lookup failed.
        let after = shown.split("dns error").nth(1).unwrap_or_default();
        assert!(after.len() > 2, "the resolver's reason is kept: {shown}");
        assert!(kept.contains("dns error"), "{kept}");
    }
}
