//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw request bytes, keyed with the app
//! secret, sent as `sha256=<hex>`. Meta signs webhooks and Flows endpoint requests
//! this way.
//!
//! The check runs over the bytes exactly as received: re-serialising parsed JSON
//! would change them. The comparison is constant-time (`Mac::verify_slice`), so the
//! time a wrong signature takes tells an attacker nothing about the right one.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header Meta puts the signature in.
pub const HEADER: &str = "x-hub-signature-256";

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused. None of the variants carries the secret or the
/// expected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    #[error("the X-Hub-Signature-256 header is not `sha256=` followed by 64 hex digits")]
    Malformed,
    #[error("the X-Hub-Signature-256 signature does not match the body")]
    Mismatch,
}

/// Checks `header` (the value of `X-Hub-Signature-256`, if any) against `body`.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex_digest = header
        .get(..7)
        .filter(|prefix| prefix.eq_ignore_ascii_case("sha256="))
        .map(|_| &header[7..])
        .ok_or(SignatureError::Malformed)?;
    if hex_digest.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    mac(secret, body)
        .verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The header value Meta would send for `body`: `sha256=<lowercase hex>`. Used by
/// tests, benchmarks and the README's curl example.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

/// Whether two secrets (the webhook verify token and the configured one) are equal,
/// in constant time: both are MACed under one key and the tags are compared with
/// `verify_slice`, so neither an early exit nor the secret's length shows in the
/// time taken. (As the message, not the key: HMAC pads keys with zeros, so `a` and
/// `a\0` would be the same key.)
pub fn secrets_equal(expected: &[u8], given: &[u8]) -> bool {
    const KEY: &[u8] = b"wabot secret comparison";
    let tag = mac(KEY, expected).finalize().into_bytes();
    mac(KEY, given).verify_slice(&tag).is_ok()
}

fn mac(secret: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let header = sign(b"s3cret", body);
        assert!(header.starts_with("sha256="));
        assert_eq!(header.len(), 7 + 64);
        assert_eq!(verify(b"s3cret", body, Some(&header)), Ok(()));
        assert_eq!(
            verify(b"s3cret", body, Some(&header.to_uppercase())),
            Ok(())
        );
    }

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(secrets_equal(b"verify-me", b"verify-me"));
        assert!(!secrets_equal(b"verify-me", b"verify-mE"));
        assert!(!secrets_equal(b"verify-me", b"verify-me "));
        assert!(!secrets_equal(b"verify-me", b""));
        assert!(!secrets_equal(b"verify-me", b"verify-me\0"));
        assert!(!secrets_equal(b"", b"\0"));
        assert!(secrets_equal(b"", b""));
    }

    #[test]
    fn the_known_rfc_4231_vector_matches() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let header = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            header,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn wrong_secret_changed_body_missing_and_malformed_headers_are_refused() {
        let body = b"{}";
        let header = sign(b"right", body);
        assert_eq!(
            verify(b"wrong", body, Some(&header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"right", b"{ }", Some(&header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(b"right", body, None), Err(SignatureError::Missing));
        for bad in [
            "",
            "sha256=",
            "sha1=abcd",
            "sha256=zz",
            &header[7..],
            &header[..60],
        ] {
            assert_eq!(
                verify(b"right", body, Some(bad)),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        let non_hex = format!("sha256={}", "g".repeat(64));
        assert_eq!(
            verify(b"right", body, Some(&non_hex)),
            Err(SignatureError::Malformed)
        );
    }
}
