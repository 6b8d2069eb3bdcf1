//! Read receipts and the typing indicator.
//!
//! When a turn starts for a customer's message, one Graph call marks it read (blue
//! ticks) and shows "typing…" until our reply arrives or 25 seconds pass. It is a
//! courtesy, not a delivery: it runs beside the turn (never before or instead of
//! the reply), is never retried, and when too many are already in flight (a slow
//! Graph API under load) the new one is skipped rather than queued, so it can
//! neither delay a reply nor pile up memory.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::credentials::CredentialStore;
use crate::telemetry::Throttle;
use crate::whatsapp::graph::GraphClient;

/// At most this many receipts in flight; more are skipped.
const IN_FLIGHT: usize = 64;

static FAILED: Throttle = Throttle::new("read receipt failed", 60);

/// Sends read receipts with the typing indicator, fire and forget.
#[derive(Clone)]
pub struct Receipts {
    graph: GraphClient,
    credentials: CredentialStore,
    permits: Arc<Semaphore>,
    enabled: bool,
}

impl Receipts {
    /// `enabled` is `WABOT_MARK_READ`.
    pub fn new(graph: GraphClient, credentials: CredentialStore, enabled: bool) -> Receipts {
        Receipts {
            graph,
            credentials,
            permits: Arc::new(Semaphore::new(IN_FLIGHT)),
            enabled,
        }
    }

    /// Marks the customer's message `wamid` read and shows the typing indicator, in
    /// the background. Returns at once.
    pub fn mark(&self, wamid: &str) {
        if !self.enabled || wamid.is_empty() {
            return;
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            crate::metrics::read_receipt("skipped");
            return;
        };
        let (graph, credentials, wamid) = (
            self.graph.clone(),
            self.credentials.clone(),
            wamid.to_owned(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            // (error, whether it is worth a warning of its own)
            let outcome = match credentials.current().await {
                Ok(credentials) => graph
                    .show_typing(&credentials, &wamid)
                    .await
                    // An unreachable Graph API is the sender's one warning (and
                    // `wabot status`'s): the receipt adds no line of its own.
                    .map_err(|e| (e.to_string(), e.unreachable_because().is_none())),
                Err(e) => Err((format!("cannot read the credentials: {e}"), true)),
            };
            match outcome {
                Ok(()) => crate::metrics::read_receipt("sent"),
                Err((error, warn)) => {
                    crate::metrics::read_receipt("failed");
                    if !warn {
                        tracing::debug!(%error, "a read receipt was not sent (not retried)");
                    } else if let Some(n) = FAILED.hit() {
                        tracing::warn!(%error, occurrences = n, "a read receipt was not sent (not retried)");
                    }
                }
            }
        });
    }
}
