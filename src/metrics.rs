//! Prometheus metrics: every name wabot exports, what it counts, and the one recorder.
//!
//! Call sites use the small functions below rather than the `metrics` macros, so that
//! each metric's name and label set live in one place and labels stay bounded: no
//! phone numbers, wamids or user-typed names ever become a label value. The recorder
//! is process-wide (the `metrics` crate's global one, installed by [`install`]); a
//! process that never installs it (benchmarks of the engine, most tests) pays one
//! relaxed atomic load per call.
//!
//! Naming follows Prometheus' conventions: `wabot_` prefix, `_total` for counters,
//! base units (`_seconds`), histograms with explicit buckets.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets (seconds): 1 ms to 30 s.
const LATENCY: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Batch size buckets (items).
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Engine steps per turn.
const STEPS: &[f64] = &[0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 50.0, 100.0, 500.0];

/// Installs the process-wide recorder once and returns its handle; later calls return
/// the same handle. `None` when another recorder was installed first (an embedding
/// program's own), in which case `/metrics` answers 404 and wabot's metrics go to
/// that recorder.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), BATCH))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("wabot_engine_steps".into()), STEPS)
                });
            let handle = match builder.map(PrometheusBuilder::install_recorder) {
                Ok(Ok(handle)) => handle,
                Ok(Err(e)) | Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics is off");
                    return None;
                }
            };
            describe();
            Some(handle)
        })
        .as_ref()
}

/// The exposition text of everything recorded so far (`None`: no recorder of ours).
pub fn render() -> Option<String> {
    let handle = HANDLE.get()?.as_ref()?;
    // Histograms are folded into their buckets here; Prometheus scrapes every 15 s
    // or so, which is all the upkeep the recorder needs.
    handle.run_upkeep();
    Some(handle.render())
}

fn describe() {
    describe_counter!(
        "wabot_api_requests_total",
        "Operator API requests by route (its template) and HTTP status"
    );
    describe_counter!(
        "wabot_api_auth_failures_total",
        "Operator API requests refused for a missing, wrong or revoked token"
    );
    describe_counter!(
        "wabot_event_deliveries_total",
        "Event delivery attempts to endpoints by result (delivered, retry, failed)"
    );
    describe_histogram!(
        "wabot_event_delivery_seconds",
        "Duration of one event delivery attempt, by result"
    );
    describe_counter!(
        "wabot_webhooks_received_total",
        "POST /webhook requests by HTTP status answered"
    );
    describe_counter!(
        "wabot_connections_refused_total",
        "Connections answered 503 at accept: WABOT_MAX_CONNECTIONS were open"
    );
    describe_counter!(
        "wabot_webhooks_unreadable_total",
        "Signed webhooks that could not be parsed, kept in webhook_unreadable"
    );
    describe_counter!(
        "wabot_messages_ingested_total",
        "Inbound messages stored (new wamids)"
    );
    describe_counter!(
        "wabot_statuses_ingested_total",
        "Message statuses (sent/delivered/read/failed) stored"
    );
    describe_counter!(
        "wabot_duplicates_dropped_total",
        "Messages and statuses Meta delivered again, dropped by the wamid constraint"
    );
    describe_histogram!(
        "wabot_ingest_batch_size",
        "Webhooks committed together in one ingest transaction"
    );
    describe_histogram!(
        "wabot_ingest_commit_seconds",
        "Time to commit one ingest batch"
    );
    describe_counter!(
        "wabot_turns_total",
        "Turns finished, by job kind and outcome"
    );
    describe_histogram!(
        "wabot_turn_latency_seconds",
        "Webhook received to the turn's first reply accepted by Meta"
    );
    describe_histogram!(
        "wabot_turn_commit_size",
        "Turns committed in one transaction"
    );
    describe_histogram!(
        "wabot_turn_commit_seconds",
        "Time to commit one batch of turns"
    );
    describe_histogram!("wabot_engine_steps", "Nodes executed per turn");
    describe_counter!(
        "wabot_engine_limit_hits_total",
        "Contexts ended by a loop guard (steps per turn / sends per turn)"
    );
    describe_counter!(
        "wabot_read_receipts_total",
        "Read receipts with the typing indicator by result (sent, failed, skipped: too many in flight)"
    );
    describe_counter!(
        "wabot_sends_total",
        "Send attempts by result (sent, retry, failed, held, lease_lost, window_closed, opted_out, window_closed_template, campaign_opted_out, campaign_invalid)"
    );
    describe_counter!(
        "wabot_send_errors_total",
        "Graph API errors by Meta error code"
    );
    describe_histogram!(
        "wabot_graph_request_seconds",
        "Graph API message calls, request to answer"
    );
    describe_gauge!(
        "wabot_sending_held",
        "1 while sending is on hold because Meta refused the access token (190)"
    );
    describe_gauge!(
        "wabot_queue_depth",
        "Unfinished jobs in the database queue (turn, send, media)"
    );
    describe_gauge!(
        "wabot_queue_due",
        "Jobs due now and not leased (waiting for a worker)"
    );
    describe_gauge!(
        "wabot_queue_oldest_due_seconds",
        "Age of the oldest due job nobody holds"
    );
    describe_gauge!(
        "wabot_stage_queue",
        "Work waiting in memory between the pipeline's stages"
    );
    describe_counter!(
        "wabot_lease_takeovers_total",
        "Jobs claimed after another lease on them expired (a crashed or stalled process)"
    );
    describe_counter!(
        "wabot_flows_requests_total",
        "Flows endpoint requests by action and result"
    );
    describe_histogram!(
        "wabot_flows_request_seconds",
        "Flows endpoint requests, decrypt to encrypted answer"
    );
    describe_counter!(
        "wabot_http_calls_total",
        "Outbound calls to data sources and rest_api nodes by result"
    );
    describe_histogram!(
        "wabot_http_call_seconds",
        "Outbound calls to data sources and rest_api nodes"
    );
    describe_gauge!(
        "wabot_db_pool_connections",
        "Database pool connections by state"
    );
    describe_gauge!(
        "wabot_handover_conversations",
        "Conversations someone besides the bot has, by state (agent, requested, paused)"
    );
    describe_counter!(
        "wabot_media_downloads_total",
        "Media download attempts by result (stored, retry, too_large, checksum_mismatch, \
         unavailable, exhausted, message_deleted, lease_lost)"
    );
    describe_counter!("wabot_media_bytes_total", "Bytes of inbound media stored");
    describe_histogram!(
        "wabot_media_download_seconds",
        "One media download attempt, claim to result"
    );
    describe_counter!(
        "wabot_log_suppressed_total",
        "Log lines folded into a periodic summary, by condition"
    );
}

// ---- ingest ---------------------------------------------------------------------

/// One answered POST /webhook.
pub fn webhook(status: u16) {
    counter!("wabot_webhooks_received_total", "status" => status_label(status)).increment(1);
}

/// A connection refused at accept because `WABOT_MAX_CONNECTIONS` were open.
pub fn connection_refused() {
    counter!("wabot_connections_refused_total").increment(1);
}

/// A signed webhook that could not be read.
pub fn webhook_unreadable() {
    counter!("wabot_webhooks_unreadable_total").increment(1);
}

/// What one committed ingest batch stored.
pub fn ingest_batch(webhooks: usize, commit: Duration, counts: IngestCounts) {
    histogram!("wabot_ingest_batch_size").record(webhooks as f64);
    histogram!("wabot_ingest_commit_seconds").record(commit.as_secs_f64());
    counter!("wabot_messages_ingested_total").increment(counts.messages_new);
    counter!("wabot_statuses_ingested_total").increment(counts.statuses_new);
    counter!("wabot_duplicates_dropped_total", "kind" => "message")
        .increment(counts.messages_duplicate);
    counter!("wabot_duplicates_dropped_total", "kind" => "status")
        .increment(counts.statuses_duplicate);
}

/// Row counts of an ingest batch.
#[derive(Debug, Default, Clone, Copy)]
pub struct IngestCounts {
    pub messages_new: u64,
    pub messages_duplicate: u64,
    pub statuses_new: u64,
    pub statuses_duplicate: u64,
}

// ---- turns ----------------------------------------------------------------------

/// How a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnOutcome {
    /// The engine ran and its effects committed.
    Done,
    /// Nothing ran (no chatbot answers, the wait was over, ...); the job is done.
    Skipped,
    /// Another worker holds the job now.
    LeaseLost,
    /// The context changed under the turn: it runs again.
    Stale,
    /// It failed and runs again later.
    Retried,
    /// It failed too often and was given up.
    GivenUp,
}

impl TurnOutcome {
    fn label(self) -> &'static str {
        match self {
            TurnOutcome::Done => "done",
            TurnOutcome::Skipped => "skipped",
            TurnOutcome::LeaseLost => "lease_lost",
            TurnOutcome::Stale => "stale",
            TurnOutcome::Retried => "retried",
            TurnOutcome::GivenUp => "given_up",
        }
    }
}

/// `kind` is a job kind's `as_str` (a fixed set).
pub fn turn(kind: &'static str, outcome: TurnOutcome) {
    counter!("wabot_turns_total", "kind" => kind, "outcome" => outcome.label()).increment(1);
}

/// The engine's work in one committed turn.
pub fn engine_turn(steps: u32, completion_reason: Option<&str>) {
    histogram!("wabot_engine_steps").record(f64::from(steps));
    let limit = match completion_reason {
        Some(crate::engine::context::reason::STEP_LIMIT) => "steps",
        Some(crate::engine::context::reason::SEND_LIMIT) => "sends",
        _ => return,
    };
    counter!("wabot_engine_limit_hits_total", "limit" => limit).increment(1);
}

/// One committed batch of turns.
pub fn turn_commit(turns: usize, took: Duration) {
    histogram!("wabot_turn_commit_size").record(turns as f64);
    histogram!("wabot_turn_commit_seconds").record(took.as_secs_f64());
}

/// A turn's first reply was accepted by Meta `since` after its webhook arrived.
pub fn turn_latency(since: Duration) {
    histogram!("wabot_turn_latency_seconds").record(since.as_secs_f64());
}

// ---- sends ----------------------------------------------------------------------

/// A read receipt with the typing indicator: `sent`, `failed` (not retried),
/// `skipped` (too many in flight).
pub fn read_receipt(result: &'static str) {
    counter!("wabot_read_receipts_total", "result" => result).increment(1);
}

/// One send attempt's result: `sent`, `retry`, `failed`, `held`, `lease_lost`,
/// `window_closed`, `opted_out` (a business-initiated message to a customer who
/// opted out, not sent).
pub fn send(result: &'static str) {
    counter!("wabot_sends_total", "result" => result).increment(1);
}

/// A Graph API error; `code` is Meta's numeric code (bounded: Meta's documented set),
/// `None` for transport errors.
pub fn send_error(code: Option<i64>) {
    let code = match code {
        Some(c) if (0..10_000_000).contains(&c) => c.to_string(),
        Some(_) => "other".to_owned(),
        None => "transport".to_owned(),
    };
    counter!("wabot_send_errors_total", "code" => code).increment(1);
}

pub fn graph_request(took: Duration) {
    histogram!("wabot_graph_request_seconds").record(took.as_secs_f64());
}

pub fn sending_held(held: bool) {
    gauge!("wabot_sending_held").set(if held { 1.0 } else { 0.0 });
}

// ---- queues and leases ------------------------------------------------------------

/// A database queue's state (`queue` is `turn`, `send` or `media`).
pub fn queue(queue: &'static str, depth: i64, due: i64, oldest_due: Option<Duration>) {
    gauge!("wabot_queue_depth", "queue" => queue).set(depth as f64);
    gauge!("wabot_queue_due", "queue" => queue).set(due as f64);
    gauge!("wabot_queue_oldest_due_seconds", "queue" => queue)
        .set(oldest_due.map_or(0.0, |d| d.as_secs_f64()));
}

/// Work waiting in memory before `stage` (`ingest`, `turns`, `sends`).
pub fn stage_queue(stage: &'static str, waiting: usize) {
    gauge!("wabot_stage_queue", "stage" => stage).set(waiting as f64);
}

pub fn lease_takeovers(queue: &'static str, jobs: usize) {
    if jobs > 0 {
        counter!("wabot_lease_takeovers_total", "queue" => queue).increment(jobs as u64);
    }
}

/// One media download attempt that ended with `result`, having stored `bytes`.
pub fn media_download(result: &'static str, bytes: u64, took: Duration) {
    counter!("wabot_media_downloads_total", "result" => result).increment(1);
    if bytes > 0 {
        counter!("wabot_media_bytes_total").increment(bytes);
    }
    histogram!("wabot_media_download_seconds").record(took.as_secs_f64());
}

/// Conversations in one handover state (`agent`, `requested`, `paused`).
pub fn handover(state: &'static str, conversations: i64) {
    gauge!("wabot_handover_conversations", "state" => state).set(conversations as f64);
}

pub fn pool(in_use: u32, idle: usize) {
    gauge!("wabot_db_pool_connections", "state" => "in_use").set(f64::from(in_use));
    gauge!("wabot_db_pool_connections", "state" => "idle").set(idle as f64);
}

// ---- Flows endpoint and outbound HTTP ----------------------------------------------

/// A Flows endpoint request: `action` is one of Meta's (`ping`, `INIT`, `data_exchange`,
/// `BACK`, `navigate`, `complete`) or `unknown`/`undecryptable`; `result` a short
/// fixed word.
pub fn flows_request(action: &str, result: &'static str, took: Duration) {
    let action = flows_action_label(action);
    counter!("wabot_flows_requests_total", "action" => action, "result" => result).increment(1);
    histogram!("wabot_flows_request_seconds", "action" => action).record(took.as_secs_f64());
}

/// An outbound call: `target` is `datasource` or `rest_api`; `result` `ok`,
/// `http_error`, `timeout`, `refused` (egress guard) or `error`.
pub fn http_call(target: &'static str, result: &'static str, took: Duration) {
    counter!("wabot_http_calls_total", "target" => target, "result" => result).increment(1);
    histogram!("wabot_http_call_seconds", "target" => target).record(took.as_secs_f64());
}

pub fn log_suppressed(condition: &'static str, lines: u64) {
    counter!("wabot_log_suppressed_total", "condition" => condition).increment(lines);
}

fn flows_action_label(action: &str) -> &'static str {
    match action {
        "ping" => "ping",
        "INIT" => "INIT",
        "data_exchange" => "data_exchange",
        "BACK" => "BACK",
        "navigate" => "navigate",
        "complete" => "complete",
        "undecryptable" => "undecryptable",
        _ => "unknown",
    }
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// One operator API request answered: `route` is the matched template
/// (`/v1/conversations/{id}`), never the path with its values.
pub fn api_request(route: &str, status: u16) {
    counter!("wabot_api_requests_total", "route" => route.to_owned(), "status" => status.to_string())
        .increment(1);
}

pub fn api_auth_failure() {
    counter!("wabot_api_auth_failures_total").increment(1);
}

/// One attempt to deliver an event: `delivered`, `retry` or `failed` (given up).
pub fn event_delivery(result: &'static str, took: Duration) {
    counter!("wabot_event_deliveries_total", "result" => result).increment(1);
    histogram!("wabot_event_delivery_seconds", "result" => result).record(took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_bounded() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
        assert_eq!(flows_action_label("INIT"), "INIT");
        assert_eq!(flows_action_label("anything a stranger sends"), "unknown");
    }
}
