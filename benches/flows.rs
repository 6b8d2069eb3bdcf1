//! The cost of the Flows endpoint's crypto per request: RSA-OAEP-SHA256 unwrap of the
//! AES key, AES-128-GCM decryption of a typical data_exchange request, and the
//! encryption of a typical answer (a screen with a ten-item dropdown).

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes128;
use aes_gcm::{AesGcm, Nonce};
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use secrecy::ExposeSecret;
use serde_json::json;
use wabot::whatsapp::flows_crypto::{generate, EncryptedRequest, FlowsKey};

/// Encrypts `body` for `public_pem` the way Meta's client does.
fn meta_request(public_pem: &str, body: &[u8]) -> EncryptedRequest {
    let b64: String = public_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = BASE64.decode(b64).expect("PEM body");
    let public = OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&der).expect("SPKI"))
        .expect("OAEP key");
    let key: [u8; 16] = rand::random();
    let iv: [u8; 16] = rand::random();
    let mut wrapped = vec![0u8; public.ciphertext_size()];
    let wrapped = public
        .encrypt(&OAEP_SHA256_MGF1SHA256, &key, &mut wrapped, None)
        .expect("wrap")
        .to_vec();
    let data = AesGcm::<Aes128, U16>::new(&key.into())
        .encrypt(Nonce::<U16>::from_slice(&iv), body)
        .expect("encrypt");
    EncryptedRequest {
        encrypted_flow_data: BASE64.encode(data),
        encrypted_aes_key: BASE64.encode(wrapped),
        initial_vector: BASE64.encode(iv),
    }
}

fn crypto(c: &mut Criterion) {
    let pair = generate().expect("keygen");
    let key = FlowsKey::from_pem(pair.private_pem.expose_secret(), None).expect("key");
    let request = json!({
        "version": "3.0", "action": "data_exchange", "screen": "BRAND_SCREEN",
        "data": {"selected_brand": "bosch", "note": "a typical small form"},
        "flow_token": "6f1c2a4e-3b7d-4c59-9a0e-2d8f5b1c7e93:flow-node-1"
    })
    .to_string();
    let items: Vec<_> = (0..10)
        .map(|i| json!({"id": format!("p{i}"), "title": format!("Product {i}"), "description": "In stock"}))
        .collect();
    let answer = json!({"screen": "PRODUCT_SCREEN", "data": {"products": items}}).to_string();
    let sealed = meta_request(&pair.public_pem, request.as_bytes());

    c.bench_function("flows decrypt request + encrypt answer", |b| {
        b.iter(|| {
            let (plain, sealer) = key.decrypt_request(black_box(&sealed)).expect("decrypts");
            black_box(plain);
            black_box(sealer.seal(answer.as_bytes()))
        })
    });
}

criterion_group!(benches, crypto);
criterion_main!(benches);
