//! The operator API's bearer tokens: made here (`wabot token create` prints one
//! once), stored as a SHA-256 (`store::tokens`), and checked on every request.

use std::fmt;

use anyhow::Context as _;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::store;
use crate::store::tokens::TokenRow;

/// What a token may do. `manage` includes `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Conversations, transcripts, chatbots' versions, status, deliveries.
    Read,
    /// Messages to customers.
    Send,
    /// Pause and resume, opt-out and opt-in, chatbots, replay, event endpoints.
    Manage,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Send, Scope::Manage];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Send => "send",
            Scope::Manage => "manage",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s.trim())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a token with `scopes` may do what `needed` allows.
pub fn allows(scopes: &[String], needed: Scope) -> bool {
    scopes
        .iter()
        .any(|s| s == needed.as_str() || (needed == Scope::Read && s == Scope::Manage.as_str()))
}

/// Every token starts with this, so that secret scanners can find a leaked one.
pub const PREFIX: &str = "wabot_";

/// A token's stored form.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Makes a token named `name` with `scopes`: the token (shown once, never stored)
/// and its row.
pub async fn create(
    pool: &PgPool,
    name: &str,
    scopes: &[Scope],
) -> anyhow::Result<(String, TokenRow)> {
    let name = name.trim();
    anyhow::ensure!(
        !name.is_empty() && name.chars().count() <= 100,
        "a token's name is 1 to 100 characters"
    );
    anyhow::ensure!(
        !scopes.is_empty(),
        "a token needs at least one scope (read, send, manage)"
    );
    let bytes: [u8; 32] = rand::random();
    let token = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hint: String = token.chars().take(PREFIX.len() + 4).collect();
    let mut names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let row = store::tokens::create(pool, name, &names, &hash(&token), &hint)
        .await
        .context("cannot store the token (is the database migrated? `wabot migrate run`)")?
        .with_context(|| format!("a token named `{name}` exists already; revoke it first"))?;
    Ok((token, row))
}

/// The live token `presented` is, if any. Found by its hash, and the stored hash
/// compared in constant time again, so neither the lookup nor the comparison
/// tells an attacker how much of a guess was right.
pub async fn authenticate(pool: &PgPool, presented: &str) -> Result<Option<TokenRow>, sqlx::Error> {
    if !presented.starts_with(PREFIX) || presented.len() > 200 {
        return Ok(None);
    }
    let digest = hash(presented);
    Ok(store::tokens::by_hash(pool, &digest)
        .await?
        .filter(|(_, stored)| bool::from(stored.as_slice().ct_eq(&digest)))
        .map(|(row, _)| row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manage_includes_read_and_nothing_else() {
        let manage = vec!["manage".to_owned()];
        assert!(allows(&manage, Scope::Read));
        assert!(allows(&manage, Scope::Manage));
        assert!(!allows(&manage, Scope::Send));
        let send = vec!["send".to_owned()];
        assert!(!allows(&send, Scope::Read));
    }
}
