//! The encryption of the WhatsApp Flows data_exchange endpoint.
//!
//! Meta wraps a fresh 128-bit AES key with our RSA public key (RSA-OAEP, SHA-256 and
//! MGF1-SHA-256, empty label) and encrypts the request with AES-128-GCM under a
//! 16-byte IV (a non-standard nonce length). We answer with the same AES key and the
//! IV with every byte inverted, base64 of ciphertext ‖ tag.
//!
//! The RSA private-key operation runs in aws-lc-rs, which is constant time; the pure
//! Rust `rsa` crate carries an open timing advisory (RUSTSEC-2023-0071). The private
//! key is PEM: PKCS#1 (`RSA PRIVATE KEY`), PKCS#8 (`PRIVATE KEY`) or passphrase
//! protected PKCS#8 (`ENCRYPTED PRIVATE KEY`, as `openssl genrsa -des3` writes with
//! OpenSSL 3). aws-lc-rs reads only plain PKCS#8 DER, so the `pkcs8` crate decrypts
//! and re-wraps the other forms first.

use std::path::Path;

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes128;
use aes_gcm::{AesGcm, Nonce};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256,
};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use pkcs8::der::pem::LineEnding;
use pkcs8::der::Encode as _;
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// AES-128-GCM with Meta's 16-byte nonce.
type FlowCipher = AesGcm<Aes128, U16>;

/// The OID of `rsaEncryption`, for wrapping a PKCS#1 key into PKCS#8.
const RSA_ENCRYPTION: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The body Meta posts to the endpoint, every field base64.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct EncryptedRequest {
    pub encrypted_flow_data: String,
    pub encrypted_aes_key: String,
    pub initial_vector: String,
}

/// Why a private key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the key is not PEM: {0}")]
    Pem(String),
    #[error(
        "the key uses OpenSSL's legacy encrypted PEM (Proc-Type header); convert it with \
         `openssl pkcs8 -topk8 -v2 aes-256-cbc -in old.pem -out new.pem`"
    )]
    LegacyEncryptedPem,
    #[error("the key is passphrase-protected but no passphrase is configured")]
    PassphraseMissing,
    #[error("the key cannot be decrypted with the configured passphrase")]
    PassphraseWrong,
    #[error("unsupported PEM label `{0}` (expected RSA PRIVATE KEY, PRIVATE KEY or ENCRYPTED PRIVATE KEY)")]
    Label(String),
    #[error("the key is not an acceptable RSA key (2048 to 8192 bits): {0}")]
    Rejected(String),
    #[error("cannot generate a key pair")]
    Generate,
}

/// Why a request could not be decrypted; every variant is HTTP 421 on the wire.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    #[error("a field is not valid base64: {0}")]
    Base64(&'static str),
    #[error("the AES key cannot be unwrapped with our private key")]
    KeyUnwrap,
    #[error("the unwrapped AES key has {0} bytes, expected 16")]
    KeyLength(usize),
    #[error("the initial vector has {0} bytes, expected 16")]
    IvLength(usize),
    #[error("the flow data does not decrypt (wrong key or tampered tag)")]
    Payload,
}

/// The endpoint's RSA private key and the PEM of its public half.
pub struct FlowsKey {
    key: OaepPrivateDecryptingKey,
    public_pem: String,
}

impl std::fmt::Debug for FlowsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowsKey").finish_non_exhaustive()
    }
}

/// A new key pair from `generate`: the private key (PKCS#8 PEM) and the public key
/// (SubjectPublicKeyInfo PEM, what Meta's "upload public key" call takes).
pub struct GeneratedKeyPair {
    pub private_pem: SecretString,
    pub public_pem: String,
}

/// Encrypts the answer to one request: the request's AES key and its inverted IV.
pub struct ResponseSealer {
    key: [u8; 16],
    iv: [u8; 16],
}

impl Drop for ResponseSealer {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl ResponseSealer {
    /// base64(AES-128-GCM(plaintext) ‖ tag), the body of a 200 answer.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let cipher = FlowCipher::new((&self.key).into());
        let nonce = Nonce::<U16>::from_slice(&self.iv);
        // Encryption with a valid key and nonce length cannot fail for inputs below
        // GCM's 64 GiB limit; an empty answer is still a well-formed (if useless) one.
        let sealed = cipher.encrypt(nonce, plaintext).unwrap_or_default();
        BASE64.encode(sealed)
    }
}

impl FlowsKey {
    /// Reads the PEM key at `path` (`WABOT_FLOWS_PRIVATE_KEY`).
    pub fn load(path: &Path, passphrase: Option<&SecretString>) -> Result<FlowsKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let text = SecretString::from(text);
        FlowsKey::from_pem(text.expose_secret(), passphrase)
    }

    /// Parses a PEM private key in any of the accepted forms.
    pub fn from_pem(pem: &str, passphrase: Option<&SecretString>) -> Result<FlowsKey, KeyError> {
        if pem.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(KeyError::LegacyEncryptedPem);
        }
        let (label, der) = pkcs8::der::pem::decode_vec(pem.trim().as_bytes())
            .map_err(|e| KeyError::Pem(e.to_string()))?;
        let mut pkcs8_der = match label {
            "PRIVATE KEY" => der,
            "RSA PRIVATE KEY" => wrap_pkcs1(&der)?,
            "ENCRYPTED PRIVATE KEY" => {
                let passphrase = passphrase.ok_or(KeyError::PassphraseMissing)?;
                let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
                    .map_err(|e| KeyError::Pem(e.to_string()))?;
                let doc = info
                    .decrypt(passphrase.expose_secret().as_bytes())
                    .map_err(|_| KeyError::PassphraseWrong)?;
                doc.as_bytes().to_vec()
            }
            other => return Err(KeyError::Label(other.to_owned())),
        };
        let parsed = PrivateDecryptingKey::from_pkcs8(&pkcs8_der);
        pkcs8_der.zeroize();
        let private = parsed.map_err(|e| KeyError::Rejected(e.to_string()))?;
        FlowsKey::from_private(private)
    }

    fn from_private(private: PrivateDecryptingKey) -> Result<FlowsKey, KeyError> {
        let public_der = private
            .public_key()
            .as_der()
            .map_err(|e| KeyError::Rejected(e.to_string()))?;
        let public_pem =
            pkcs8::der::pem::encode_string("PUBLIC KEY", LineEnding::LF, public_der.as_ref())
                .map_err(|e| KeyError::Pem(e.to_string()))?;
        let key = OaepPrivateDecryptingKey::new(private)
            .map_err(|e| KeyError::Rejected(e.to_string()))?;
        Ok(FlowsKey { key, public_pem })
    }

    /// The public key as PEM (SubjectPublicKeyInfo), to upload to Meta.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// Unwraps the AES key, decrypts the flow data; returns the plaintext and the
    /// sealer for the answer.
    pub fn decrypt_request(
        &self,
        request: &EncryptedRequest,
    ) -> Result<(Vec<u8>, ResponseSealer), DecryptError> {
        let wrapped = BASE64
            .decode(request.encrypted_aes_key.trim())
            .map_err(|_| DecryptError::Base64("encrypted_aes_key"))?;
        let iv = BASE64
            .decode(request.initial_vector.trim())
            .map_err(|_| DecryptError::Base64("initial_vector"))?;
        let data = BASE64
            .decode(request.encrypted_flow_data.trim())
            .map_err(|_| DecryptError::Base64("encrypted_flow_data"))?;

        let mut buffer = vec![0u8; self.key.min_output_size()];
        let unwrapped = self
            .key
            .decrypt(&OAEP_SHA256_MGF1SHA256, &wrapped, &mut buffer, None)
            .map_err(|_| DecryptError::KeyUnwrap)?;
        let key: [u8; 16] = match <[u8; 16]>::try_from(&*unwrapped) {
            Ok(key) => key,
            Err(_) => {
                let len = unwrapped.len();
                buffer.zeroize();
                return Err(DecryptError::KeyLength(len));
            }
        };
        buffer.zeroize();
        let iv: [u8; 16] = iv
            .as_slice()
            .try_into()
            .map_err(|_| DecryptError::IvLength(iv.len()))?;

        let cipher = FlowCipher::new((&key).into());
        let plaintext = cipher
            .decrypt(Nonce::<U16>::from_slice(&iv), data.as_slice())
            .map_err(|_| DecryptError::Payload)?;
        let mut flipped = iv;
        for byte in &mut flipped {
            *byte = !*byte;
        }
        Ok((plaintext, ResponseSealer { key, iv: flipped }))
    }
}

/// Writes a new 2048-bit RSA key pair.
pub fn generate() -> Result<GeneratedKeyPair, KeyError> {
    let private =
        PrivateDecryptingKey::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
    let der = private.as_der().map_err(|_| KeyError::Generate)?;
    let private_pem = pkcs8::der::pem::encode_string("PRIVATE KEY", LineEnding::LF, der.as_ref())
        .map_err(|_| KeyError::Generate)?;
    let key = FlowsKey::from_private(private)?;
    Ok(GeneratedKeyPair {
        private_pem: SecretString::from(private_pem),
        public_pem: key.public_pem,
    })
}

/// Wraps a PKCS#1 `RSAPrivateKey` into a PKCS#8 `PrivateKeyInfo`.
fn wrap_pkcs1(pkcs1: &[u8]) -> Result<Vec<u8>, KeyError> {
    let info = pkcs8::PrivateKeyInfo {
        algorithm: pkcs8::AlgorithmIdentifierRef {
            oid: RSA_ENCRYPTION,
            parameters: Some(pkcs8::der::asn1::AnyRef::NULL),
        },
        private_key: pkcs1,
        public_key: None,
    };
    info.to_der().map_err(|e| KeyError::Pem(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey};

    /// Encrypts a request the way Meta's client does, with only the public PEM.
    fn meta_encrypt(public_pem: &str, body: &[u8]) -> (EncryptedRequest, [u8; 16], [u8; 16]) {
        let (_, der) = pkcs8::der::pem::decode_vec(public_pem.as_bytes()).unwrap();
        let public =
            OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&der).unwrap()).unwrap();
        let aes_key: [u8; 16] = rand::random();
        let iv: [u8; 16] = rand::random();
        let mut wrapped = vec![0u8; public.ciphertext_size()];
        let wrapped = public
            .encrypt(&OAEP_SHA256_MGF1SHA256, &aes_key, &mut wrapped, None)
            .unwrap();
        let data = FlowCipher::new((&aes_key).into())
            .encrypt(Nonce::<U16>::from_slice(&iv), body)
            .unwrap();
        (
            EncryptedRequest {
                encrypted_flow_data: BASE64.encode(data),
                encrypted_aes_key: BASE64.encode(wrapped),
                initial_vector: BASE64.encode(iv),
            },
            aes_key,
            iv,
        )
    }

    #[test]
    fn a_generated_key_decrypts_what_its_public_half_encrypted_and_answers_with_the_flipped_iv() {
        let pair = generate().unwrap();
        let key = FlowsKey::from_pem(pair.private_pem.expose_secret(), None).unwrap();
        assert_eq!(key.public_key_pem(), pair.public_pem);
        let (request, aes_key, iv) = meta_encrypt(&pair.public_pem, br#"{"action":"ping"}"#);
        let (plain, sealer) = key.decrypt_request(&request).unwrap();
        assert_eq!(plain, br#"{"action":"ping"}"#);

        let answer = BASE64.decode(sealer.seal(b"{\"ok\":1}")).unwrap();
        let flipped: Vec<u8> = iv.iter().map(|b| !b).collect();
        let opened = FlowCipher::new((&aes_key).into())
            .decrypt(Nonce::<U16>::from_slice(&flipped), answer.as_slice())
            .unwrap();
        assert_eq!(opened, b"{\"ok\":1}");
    }

    #[test]
    fn a_tampered_tag_and_bad_base64_are_decryption_failures() {
        let pair = generate().unwrap();
        let key = FlowsKey::from_pem(pair.private_pem.expose_secret(), None).unwrap();
        let (mut request, _, _) = meta_encrypt(&pair.public_pem, b"{}");
        let mut data = BASE64.decode(&request.encrypted_flow_data).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        request.encrypted_flow_data = BASE64.encode(data);
        assert!(matches!(
            key.decrypt_request(&request),
            Err(DecryptError::Payload)
        ));
        request.initial_vector = "***".into();
        assert!(matches!(
            key.decrypt_request(&request),
            Err(DecryptError::Base64(_))
        ));
    }

    #[test]
    fn legacy_encrypted_pem_is_refused_with_advice() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: DES-EDE3-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let err = FlowsKey::from_pem(pem, None).unwrap_err();
        assert!(err.to_string().contains("openssl pkcs8"), "{err}");
    }
}
