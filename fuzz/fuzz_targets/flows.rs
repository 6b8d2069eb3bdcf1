//! The Flows endpoint's pure path: an encrypted request (the test key of
//! `fixtures/flows`, fixed here) → RSA-OAEP unwrap → AES-GCM decrypt → JSON →
//! the next screen → the sealed answer, which must decrypt back with the inverted IV.
//! Mode 0 is the raw-bytes path: fuzzer bytes as the HTTP body, which can only be
//! refused (the endpoint's 421), never panic.
#![no_main]

use std::sync::LazyLock;

use aes_gcm::aead::{generic_array::typenum::U16, Aead, KeyInit};
use aes_gcm::aes::Aes128;
use aes_gcm::{AesGcm, Nonce};
use arbitrary::{Arbitrary, Unstructured};
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use wabot::datasource::flow::launch as screens;
use wabot::whatsapp::flows::next_screen;
use wabot::whatsapp::flows_crypto::{EncryptedRequest, FlowsKey};

type FlowCipher = AesGcm<Aes128, U16>;

const PEM: &str = include_str!("../../fixtures/flows/pkcs8.pem");

static KEY: LazyLock<FlowsKey> =
    LazyLock::new(|| FlowsKey::from_pem(PEM, None).expect("the fixture key loads"));
static PUBLIC: LazyLock<OaepPublicEncryptingKey> = LazyLock::new(|| {
    let (_, der) = pkcs8::der::pem::decode_vec(KEY.public_key_pem().as_bytes()).unwrap();
    OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&der).unwrap()).unwrap()
});

/// A Flow JSON with a few screens and routes, for `next_screen`.
fn flow_json() -> Value {
    json!({"version": "5.0", "routing_model": {"A": ["B", "C"], "B": ["C"], "C": []},
        "screens": [{"id": "A", "data": {}}, {"id": "B"}, {"id": "C", "terminal": true}]})
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 4 == 0 {
        // The raw body path: whatever it is, it does not decrypt.
        let refused = serde_json::from_slice::<EncryptedRequest>(rest)
            .map_err(|e| e.to_string())
            .and_then(|r| KEY.decrypt_request(&r).map_err(|e| e.to_string()));
        assert!(refused.is_err(), "random bytes decrypted");
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(aes_key) = <[u8; 16]>::arbitrary(&mut u) else {
        return;
    };
    let Ok(iv) = <[u8; 16]>::arbitrary(&mut u) else {
        return;
    };
    let Ok(corrupt) = u8::arbitrary(&mut u) else {
        return;
    };
    let plaintext = u.take_rest();

    let mut wrapped = vec![0u8; PUBLIC.ciphertext_size()];
    let wrapped = PUBLIC
        .encrypt(&OAEP_SHA256_MGF1SHA256, &aes_key, &mut wrapped, None)
        .expect("OAEP encrypts 16 bytes")
        .to_vec();
    let mut sealed = FlowCipher::new((&aes_key).into())
        .encrypt(Nonce::<U16>::from_slice(&iv), plaintext)
        .expect("GCM encrypts");
    let mut request = EncryptedRequest {
        encrypted_flow_data: BASE64.encode(&sealed),
        encrypted_aes_key: BASE64.encode(&wrapped),
        initial_vector: BASE64.encode(iv),
    };
    // Sometimes damage one field: the request must then be refused.
    let damaged = match corrupt % 8 {
        1 => {
            let i = corrupt as usize % sealed.len();
            sealed[i] ^= 0x5a;
            request.encrypted_flow_data = BASE64.encode(&sealed);
            true
        }
        2 => {
            request.initial_vector = BASE64.encode(&iv[..(corrupt as usize % 16)]);
            true
        }
        3 => {
            request.encrypted_aes_key = BASE64.encode(&wrapped[1..]);
            true
        }
        4 => {
            request.encrypted_flow_data.push_str("!*");
            true
        }
        _ => false,
    };
    // The request travels as JSON, as Meta posts it.
    let body = serde_json::to_vec(&request).unwrap();
    let parsed: EncryptedRequest = serde_json::from_slice(&body).unwrap();
    let decrypted = KEY.decrypt_request(&parsed);
    let (plain, sealer) = match decrypted {
        Ok(pair) => pair,
        Err(_) => {
            assert!(damaged, "an intact request was refused");
            return;
        }
    };
    assert!(!damaged, "a damaged request decrypted");
    assert_eq!(plain, plaintext);

    // The handler's next steps that need no database.
    let answer = match serde_json::from_slice::<Value>(&plain) {
        Ok(request) => {
            let screen = request.get("screen").and_then(Value::as_str).unwrap_or("A");
            let submitted = request.get("data").cloned().unwrap_or(Value::Null);
            let next = next_screen(&flow_json(), screen, &submitted);
            let initial = screens::initial_screen(&flow_json(), &submitted);
            let data = screens::initial_data(&submitted);
            json!({"next": format!("{next:?}"), "initial": initial, "data": data})
        }
        Err(_) => json!({"error_msg": "bad request"}),
    };
    let text = answer.to_string();
    let sealed_answer = sealer.seal(text.as_bytes());
    // Meta decrypts with the same key and the inverted IV.
    let flipped: Vec<u8> = iv.iter().map(|b| !b).collect();
    let opened = FlowCipher::new((&aes_key).into())
        .decrypt(
            Nonce::<U16>::from_slice(&flipped),
            BASE64.decode(sealed_answer).unwrap().as_slice(),
        )
        .expect("the answer decrypts with the inverted IV");
    assert_eq!(opened, text.as_bytes());
});
