//! Pinned chatbot versions: a conversation finishes on the graph it started on,
//! whatever the editor does meanwhile; new conversations start on the edited graph;
//! the versions nobody needs are purged.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::*;
use crate::engine::fixture;

/// Another customer, to start a conversation of their own.
const OTHER: &str = "905559998877";

/// Posts a text from `wa_id` and expects Meta's 200.
async fn say_as(engine: &Engine, wa_id: &str, wamid: &str, body: &str) {
    let message = crate::webhook::text(wa_id, wamid, body, crate::webhook::now_secs());
    let body = crate::webhook::messages_webhook(wa_id, "Other", vec![message]);
    let response = engine.app.post_webhook(&body).await;
    assert_eq!(response.status(), 200);
}

/// The support menu as the builder's editor leaves it after replacing the question
/// node `menu` with `menu-v2` and rewording the welcome and the prices.
fn edited(original: &Value) -> (Value, Value) {
    let mut nodes: Vec<Value> = original["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["id"] != "menu")
        .cloned()
        .collect();
    for node in &mut nodes {
        match node["id"].as_str() {
            Some("welcome") => node["data"]["content"] = json!("Welcome to the new help line."),
            Some("answer-prices") => node["data"]["content"] = json!("New prices: all 3 EUR."),
            _ => {}
        }
    }
    nodes.push(
        json!({"id": "menu-v2", "type": "question", "position": {"x": 0, "y": 200},
        "data": {"type": "question", "label": "Menu", "questionType": "buttons",
                 "content": "Pick one:", "variable": "menu_selection",
                 "buttons": [{"id": "btn_hours", "title": "Hours"},
                             {"id": "btn_prices", "title": "Prices"}]}}),
    );
    let edges = json!([
        {"id": "e1", "source": "start", "target": "welcome"},
        {"id": "e2b", "source": "welcome", "target": "menu-v2"},
        {"id": "e3b", "source": "menu-v2", "target": "answer-hours", "sourceHandle": "btn_hours"},
        {"id": "e4b", "source": "menu-v2", "target": "answer-prices", "sourceHandle": "btn_prices"},
        {"id": "e6", "source": "answer-hours", "target": "goodbye"},
        {"id": "e7", "source": "answer-prices", "target": "goodbye"}
    ]);
    (Value::Array(nodes), edges)
}

/// What WhatsApp Builder's editor does on save.
async fn edit_chatbot(pool: &PgPool, id: Uuid, nodes: &Value, edges: &Value) {
    let updated = sqlx::query(
        "UPDATE chatbots SET nodes = $2, edges = $3, \"updatedAt\" = now() WHERE id = $1",
    )
    .bind(id)
    .bind(nodes)
    .bind(edges)
    .execute(pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(updated, 1);
}

/// The version hash each customer's latest context is pinned to.
async fn pinned(pool: &PgPool, wa_id: &str) -> String {
    sqlx::query_scalar(
        "SELECT x.variables #>> '{__wabot,version}' FROM conversation_contexts x \
         JOIN conversation_keys k ON k.conversation_id = x.\"conversationId\" \
         WHERE k.customer_wa_id = $1 ORDER BY x.\"createdAt\" DESC LIMIT 1",
    )
    .bind(wa_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// `(hash, live contexts)` of the chatbot's versions, newest first.
async fn versions(pool: &PgPool, id: Uuid) -> Vec<(String, i64)> {
    wabot::store::versions::list(pool, id)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.hash, v.live))
        .collect()
}

fn hash_of(nodes: &Value, edges: &Value) -> String {
    wabot::engine::version::hash(nodes, edges, None)
}

#[tokio::test]
async fn a_conversation_finishes_on_the_version_it_started_on_after_an_edit_deletes_its_node() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    let original = load_json(&fixture("support-menu.json"));
    let bot = install_chatbot(pool, &original).await;
    let v1 = hash_of(&original["nodes"], &original["edges"]);

    // The customer waits at the question `menu`.
    engine.say(text("wamid.V1", "hello")).await;
    let replies = engine.replies(0, 2).await;
    assert_eq!(
        replies[0].text(),
        Some("Hi! Welcome to the Corner Bakery help line.")
    );
    let (status, node, vars) = active_context(pool).await.expect("waiting");
    assert_eq!((status.as_str(), node.as_str()), ("waiting_input", "menu"));
    assert_eq!(vars["__wabot"]["version"], json!(v1), "pinned at the start");
    assert_eq!(versions(pool, bot).await, vec![(v1.clone(), 1)]);

    // The editor deletes `menu` and rewords the answers.
    let (nodes, edges) = edited(&original);
    let v2 = hash_of(&nodes, &edges);
    assert_ne!(v1, v2);
    edit_chatbot(pool, bot, &nodes, &edges).await;

    // The answer is taken on the graph the conversation started on.
    engine
        .say(button_reply("wamid.V2", "btn_prices", "Prices"))
        .await;
    let replies = engine.replies(2, 2).await;
    assert_eq!(
        replies[0].text(),
        Some("Prices: bread from 2 EUR, cakes from 18 EUR, coffee 2.50 EUR.")
    );
    assert!(replies[1]
        .text()
        .unwrap()
        .starts_with("Thank you for writing"));
    assert!(active_context(pool).await.is_none(), "completed");
    let (reason, history): (String, Value) = sqlx::query_as(
        "SELECT \"completionReason\"::text, \"nodeHistory\" FROM conversation_contexts",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(reason, "flow_completed", "not node_missing");
    assert!(history.to_string().contains("answer-prices"), "{history}");
    assert_eq!(pinned(pool, CUSTOMER).await, v1);

    // A new conversation starts on the edited graph.
    say_as(&engine, OTHER, "wamid.V3", "hi").await;
    let replies = engine.replies(4, 2).await;
    assert_eq!(replies[0].to(), Some(OTHER));
    assert_eq!(replies[0].text(), Some("Welcome to the new help line."));
    assert_eq!(replies[1].body["interactive"]["body"]["text"], "Pick one:");
    assert_eq!(pinned(pool, OTHER).await, v2);
    let (status, node, _) = active_context(pool).await.expect("waiting");
    assert_eq!(
        (status.as_str(), node.as_str()),
        ("waiting_input", "menu-v2")
    );

    // Both versions are kept, newest first, with the live conversation on each.
    assert_eq!(
        versions(pool, bot).await,
        vec![(v2.clone(), 1), (v1.clone(), 0)]
    );
    let stored: (Value, Value, String) = sqlx::query_as(
        "SELECT nodes, edges, name FROM wabot_chatbot_versions WHERE chatbot_id = $1 AND hash = $2",
    )
    .bind(bot)
    .bind(&v1)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        hash_of(&stored.0, &stored.1),
        v1,
        "the stored content is the content hashed"
    );
    assert_eq!(stored.2, "Support Menu");
    let out = crate::ops_cli::wabot(
        &engine.app.config.database_url,
        &["chatbot", "versions", &bot.to_string()],
    );
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines[0], format!("Support Menu ({bot}): 2 versions"));
    assert!(
        lines[1].contains("VERSION") && lines[1].contains("LIVE"),
        "{listing}"
    );
    assert!(
        lines[2].starts_with(&format!("  {}", &v2[..12])) && lines[2].ends_with("1  current"),
        "{listing}"
    );
    assert!(
        lines[3].starts_with(&format!("  {}", &v1[..12])) && lines[3].trim_end().ends_with('0'),
        "{listing}"
    );
    assert_eq!(lines.len(), 4, "{listing}");

    // The editor changes the graph again while OTHER waits on v2. Maintenance
    // leaves a chatbot edited within the settling time alone; past it, the version
    // nobody needs goes (v1), the one a live conversation needs stays (v2), although
    // neither is the current graph.
    let mut nodes3 = nodes.clone();
    for node in nodes3.as_array_mut().unwrap() {
        if node["id"] == "goodbye" {
            node["data"]["content"] = json!("Bye from v3.");
        }
    }
    let v3 = hash_of(&nodes3, &edges);
    edit_chatbot(pool, bot, &nodes3, &edges).await;
    let settled = wabot::worker::retention::VERSIONS_SETTLED;
    assert_eq!(
        wabot::worker::retention::purge_versions(pool, settled)
            .await
            .unwrap(),
        0,
        "just edited"
    );
    assert_eq!(
        wabot::worker::retention::purge_versions(pool, Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert_eq!(versions(pool, bot).await, vec![(v2.clone(), 1)]);

    // OTHER finishes on v2 (v2's goodbye), and the next conversation runs on v3.
    let answer = json!({"from": OTHER, "id": "wamid.V4", "timestamp": crate::webhook::now_secs().to_string(),
        "type": "interactive", "interactive": {"type": "button_reply",
        "button_reply": {"id": "btn_prices", "title": "Prices"}}});
    let response = engine
        .app
        .post_webhook(&crate::webhook::messages_webhook(
            OTHER,
            "Other",
            vec![answer],
        ))
        .await;
    assert_eq!(response.status(), 200);
    let replies = engine.replies(6, 2).await;
    assert_eq!(replies[0].text(), Some("New prices: all 3 EUR."));
    assert!(replies[1]
        .text()
        .unwrap()
        .starts_with("Thank you for writing"));
    engine.say(text("wamid.V5", "hello again")).await;
    let replies = engine.replies(8, 2).await;
    assert_eq!(replies[0].text(), Some("Welcome to the new help line."));
    assert_eq!(pinned(pool, CUSTOMER).await, v3);

    // v2 is needed by nobody now and is not current: it goes; v3 (current, and
    // CUSTOMER waits on it) stays.
    assert_eq!(
        wabot::worker::retention::purge_versions(pool, Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert_eq!(versions(pool, bot).await, vec![(v3.clone(), 1)]);
}

#[tokio::test]
async fn the_current_graphs_version_is_kept_without_conversations_and_goes_with_its_chatbot() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    let original = load_json(&fixture("support-menu.json"));
    let bot = install_chatbot(pool, &original).await;
    let v1 = hash_of(&original["nodes"], &original["edges"]);

    engine.say(text("wamid.K1", "hello")).await;
    engine.replies(0, 2).await;
    engine
        .say(button_reply("wamid.K2", "btn_hours", "Opening hours"))
        .await;
    engine.replies(2, 2).await;
    assert!(active_context(pool).await.is_none(), "completed");

    // No live conversation, but new ones start on it: it stays.
    assert_eq!(
        wabot::worker::retention::purge_versions(pool, Duration::ZERO)
            .await
            .unwrap(),
        0
    );
    assert_eq!(versions(pool, bot).await, vec![(v1, 0)]);

    // Renaming or switching a chatbot off is not a new version.
    sqlx::query("UPDATE chatbots SET name = 'Renamed', \"updatedAt\" = now() WHERE id = $1")
        .bind(bot)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(
        wabot::worker::retention::purge_versions(pool, Duration::ZERO)
            .await
            .unwrap(),
        0
    );

    sqlx::query("DELETE FROM chatbots WHERE id = $1")
        .bind(bot)
        .execute(pool)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM wabot_chatbot_versions")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "a chatbot's versions go with it");
}

#[tokio::test]
async fn a_context_from_before_versions_is_pinned_at_its_next_turn() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    let original = load_json(&fixture("support-menu.json"));
    let bot = install_chatbot(pool, &original).await;
    let v1 = hash_of(&original["nodes"], &original["edges"]);

    engine.say(text("wamid.L1", "hello")).await;
    engine.replies(0, 2).await;
    // As an older wabot left it: no version, none stored.
    sqlx::query(
        "UPDATE conversation_contexts SET variables = variables #- '{__wabot,version}' \
         WHERE \"isActive\"",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM wabot_chatbot_versions")
        .execute(pool)
        .await
        .unwrap();
    // Saved again without a change to the graph: the turn stage reads the chatbot
    // anew rather than taking its compiled graph as stored.
    sqlx::query("UPDATE chatbots SET \"updatedAt\" = now() WHERE id = $1")
        .bind(bot)
        .execute(pool)
        .await
        .unwrap();

    // An invalid answer keeps it waiting at `menu`: one turn on the chatbot's graph.
    engine.say(text("wamid.L2", "what?")).await;
    eventually(pool, "SELECT count(*) FROM wabot_chatbot_versions", 1).await;
    eventually(
        pool,
        "SELECT count(*) FROM turn_jobs WHERE done_at IS NULL AND kind <> 'timeout'",
        0,
    )
    .await;
    let (status, node, vars) = active_context(pool).await.expect("still waiting");
    assert_eq!((status.as_str(), node.as_str()), ("waiting_input", "menu"));
    assert_eq!(vars["__wabot"]["version"], json!(v1));
    assert_eq!(versions(pool, bot).await, vec![(v1, 1)]);
}
