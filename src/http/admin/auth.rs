//! Who is calling: the bearer token of each request, found by its hash
//! (`service::tokens::authenticate`), and a limiter of failed attempts per
//! address, so that guessing tokens costs a guesser time rather than us.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use uuid::Uuid;

use super::problem::Problem;
use super::AdminState;
use crate::service::tokens::{self, Scope};

/// Failed attempts an address may make per window before it gets 429.
pub const MAX_FAILURES: u32 = 10;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past it, expired entries are dropped, then all.
const MAX_TRACKED: usize = 10_000;

/// Failed attempts by address, in memory (per process).
#[derive(Debug, Default)]
pub struct Limiter {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Limiter {
    /// Seconds to wait when `ip` has failed too often in the current window.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (count, since) = map.get(&ip)?;
        let left = WINDOW.checked_sub(since.elapsed())?;
        (*count >= MAX_FAILURES).then(|| left.as_secs().max(1))
    }

    /// Counts a failed attempt of `ip`.
    pub fn fail(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

/// The caller of a request: a live token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
}

impl Caller {
    /// 403 unless the token has `scope`.
    pub fn need(&self, scope: Scope) -> Result<(), Problem> {
        if tokens::allows(&self.scopes, scope) {
            return Ok(());
        }
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the token `{}` lacks the `{scope}` scope (it has: {})",
                self.name,
                self.scopes.join(", ")
            ),
        ))
    }
}

impl FromRequestParts<AdminState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Caller, Problem> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if let Some(secs) = state.limiter.blocked(ip) {
            let mut p = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-failures",
                format!("too many requests with a wrong token from {ip}; try again in {secs} s"),
            );
            p.retry_after = Some(secs);
            return Err(p);
        }
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(presented) = presented else {
            state.limiter.fail(ip);
            crate::metrics::api_auth_failure();
            return Err(Problem::unauthorized(
                "an `Authorization: Bearer <token>` header is required (`wabot token create`)",
            ));
        };
        match tokens::authenticate(&state.ctx.pool, presented).await {
            Ok(Some(row)) => Ok(Caller {
                token_id: row.id,
                name: row.name,
                scopes: row.scopes,
            }),
            Ok(None) => {
                state.limiter.fail(ip);
                crate::metrics::api_auth_failure();
                // Never the token in the log: only the address it came from.
                tracing::info!(%ip, "operator API: a wrong or revoked token");
                Err(Problem::unauthorized("the token is wrong or revoked"))
            }
            Err(e) => Err(Problem::from(e)),
        }
    }
}
