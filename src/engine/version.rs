//! A chatbot version: the graph a conversation runs on, named by the hash of its
//! content. The builder edits `chatbots` in place, so a conversation that started
//! before an edit would otherwise continue on a graph it never saw (and end
//! `node_missing` when the edit deleted the node it waits at). A context records the
//! hash it started on ([`super::Context::pin`]) and the turn stage runs it on that
//! graph until it ends.
//!
//! The hash covers what decides how the chatbot behaves (nodes, edges, metadata:
//! trigger and restart keywords) and nothing else: renaming a chatbot or switching
//! it on and off makes no new version.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The version's name: the hex sha256 of the canonical form of nodes, edges and
/// metadata (a missing metadata and a JSON `null` are the same version).
pub fn hash(nodes: &Value, edges: &Value, metadata: Option<&Value>) -> String {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(b"{\"edges\":");
    canonical(edges, &mut out);
    out.extend_from_slice(b",\"metadata\":");
    canonical(metadata.unwrap_or(&Value::Null), &mut out);
    out.extend_from_slice(b",\"nodes\":");
    canonical(nodes, &mut out);
    out.push(b'}');
    hex::encode(Sha256::digest(&out))
}

/// JSON with every object's keys sorted and no whitespace. The same graph read
/// twice must give the same bytes whatever order its keys come in: the crate keeps
/// insertion order (`preserve_order`), and PostgreSQL's jsonb has an order of its
/// own that an editor's client does not share.
fn canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                scalar(&Value::String(key.clone()), out);
                out.push(b':');
                canonical(&map[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        other => scalar(other, out),
    }
}

fn scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_whitespace_do_not_change_the_version() {
        let a: Value =
            serde_json::from_str(r#"[{"id": "s", "data": {"type": "start", "label": "S"}}]"#)
                .unwrap();
        let b: Value =
            serde_json::from_str(r#"[{"data":{"label":"S","type":"start"},"id":"s"}]"#).unwrap();
        let edges = json!([]);
        assert_eq!(hash(&a, &edges, None), hash(&b, &edges, None));
        assert_eq!(hash(&a, &edges, None), hash(&a, &edges, Some(&Value::Null)));
        assert_eq!(hash(&a, &edges, None).len(), 64);
    }

    #[test]
    fn a_context_started_on_a_named_version_is_pinned_to_it_for_its_life() {
        use crate::engine::{compile_json, Context, ContextStatus, Customer};
        let doc = json!({"name": "t",
            "nodes": [{"id": "s", "type": "start", "data": {"type": "start"}},
                      {"id": "m", "type": "message", "data": {"type": "message", "content": "hi"}}],
            "edges": [{"id": "e", "source": "s", "target": "m"}]});
        let (bot, _) = compile_json(&doc).unwrap();
        let start = |bot: &crate::engine::CompiledChatbot| {
            Context::start(
                uuid::Uuid::nil(),
                uuid::Uuid::nil(),
                uuid::Uuid::nil(),
                bot,
                &Customer::default(),
            )
        };
        assert_eq!(
            start(&bot).version(),
            None,
            "a file's chatbot has no version"
        );
        let version = hash(&doc["nodes"], &doc["edges"], None);
        let bot = bot.with_version(version.clone());
        let mut context = start(&bot);
        assert_eq!(context.version(), Some(version.clone()));
        // wabot's other bookkeeping comes and goes; the version stays.
        let mut state = context.state();
        state.retries = 2;
        context.set_state(&state);
        context.finish(
            ContextStatus::Completed,
            "flow_completed",
            chrono::Utc::now(),
        );
        assert_eq!(context.version(), Some(version));
    }

    #[test]
    fn any_change_of_content_is_a_new_version() {
        let nodes = json!([{"id": "s", "data": {"type": "start"}}]);
        let edges = json!([{"id": "e", "source": "s", "target": "m"}]);
        let meta = json!({"triggerKeywords": ["hi"]});
        let base = hash(&nodes, &edges, Some(&meta));
        assert_ne!(base, hash(&nodes, &json!([]), Some(&meta)));
        assert_ne!(base, hash(&nodes, &edges, None));
        assert_ne!(
            base,
            hash(
                &json!([{"id": "s", "data": {"type": "start", "label": "x"}}]),
                &edges,
                Some(&meta)
            )
        );
        // The same values in other places are not the same document.
        assert_ne!(
            hash(&json!([1]), &json!([]), None),
            hash(&json!([]), &json!([1]), None)
        );
    }
}
