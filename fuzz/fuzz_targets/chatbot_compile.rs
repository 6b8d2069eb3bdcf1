//! A chatbot document → parse → compile → validate. Half of the inputs are raw
//! bytes read as JSON (a document from a file or another program's database), half
//! are structure-aware documents (`wabot_fuzz::ArbDoc`): deep graphs, cycles,
//! edges to missing nodes, unknown handles, huge fields.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wabot::engine::{self, ChatbotDoc};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let doc = if mode % 2 == 0 {
        match serde_json::from_slice::<Value>(rest) {
            Ok(v) => v,
            Err(_) => return,
        }
    } else {
        match wabot_fuzz::ArbDoc::arbitrary(&mut Unstructured::new(rest)) {
            Ok(d) => d.0,
            Err(_) => return,
        }
    };
    let by_json = engine::compile_json(&doc);
    // Reading the columns of a stored row gives the same verdict as the export.
    if let Ok(parsed) = ChatbotDoc::from_json(&doc) {
        let by_doc = engine::compile(&parsed);
        assert_eq!(by_json.is_ok(), by_doc.is_ok());
        let columns = ChatbotDoc::from_columns(
            &parsed.name,
            Value::Array(parsed.nodes.clone()),
            Value::Array(parsed.edges.clone()),
            parsed.metadata.clone(),
        );
        assert_eq!(engine::compile(&columns).is_ok(), by_doc.is_ok());
    }
    match by_json {
        Ok((bot, warnings)) => {
            for w in &warnings {
                let _ = w.to_string();
            }
            // Every node the graph holds is found by its id, and every edge leads
            // to a node of the graph.
            for node in bot.nodes() {
                let index = bot.find(&node.id).expect("a compiled node is found by id");
                assert_eq!(bot.node(index).id, node.id);
                for edge in &node.out {
                    assert!(edge.target.index() < bot.node_count());
                    let _ = bot.next(index, edge.handle.as_deref());
                }
            }
            let _ = bot.node(bot.start());
            // The chooser over the document's metadata (trigger keywords).
            let chosen = wabot::engine::compile::choose_chatbot(
                [(0u8, doc.get("metadata"))],
                Some("order"),
            );
            assert!(chosen.is_none() || chosen == Some(0));
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "a refusal names at least one problem");
            for e in &errors {
                let _ = e.to_string();
            }
        }
    }
});
