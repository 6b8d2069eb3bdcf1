//! Chatbots and contexts in PostgreSQL, and the compiled-chatbot cache.

use std::sync::Arc;

use chrono::Utc;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;
use wabot::engine::cache::ChatbotCache;
use wabot::engine::{
    compile, run_turn, ChatbotDoc, Context, ContextStatus, Customer, EngineLimits, Event,
};
use wabot::store::chatbots::{self, NewChatbot};

/// The store's context rows, read and written as the engine's contexts, the way the
/// turn stage converts them.
mod contexts {
    use chrono::{DateTime, Utc};
    use sqlx::{PgConnection, PgPool};
    use uuid::Uuid;
    use wabot::engine::{Context, ContextStatus};
    use wabot::mapping::{context_from_row, context_to_row};
    use wabot::store::contexts as rows;

    pub async fn save(conn: &mut PgConnection, context: &Context) -> Result<(), sqlx::Error> {
        rows::save(conn, &context_to_row(context)).await
    }

    pub async fn load_active(pool: &PgPool, id: Uuid) -> Result<Option<Context>, sqlx::Error> {
        Ok(rows::load_active(pool, id)
            .await?
            .as_ref()
            .map(context_from_row))
    }

    pub async fn load_active_for_update(
        conn: &mut PgConnection,
        id: Uuid,
    ) -> Result<Option<Context>, sqlx::Error> {
        Ok(rows::load_active_for_update(conn, id)
            .await?
            .as_ref()
            .map(context_from_row))
    }

    pub async fn load(pool: &PgPool, id: Uuid) -> Result<Option<Context>, sqlx::Error> {
        Ok(rows::load(pool, id).await?.as_ref().map(context_from_row))
    }

    pub async fn deactivate(
        conn: &mut PgConnection,
        id: Uuid,
        status: ContextStatus,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, sqlx::Error> {
        rows::deactivate(conn, id, status.as_str(), reason, now).await
    }
}

use crate::engine::{fixture, read_json};
use crate::helpers;

async fn import(pool: &PgPool, path: &std::path::Path, active: bool) -> Uuid {
    let doc = ChatbotDoc::from_json(&read_json(path)).expect("a chatbot document");
    chatbots::insert(pool, &NewChatbot::from_doc(&doc, active))
        .await
        .expect("insert chatbot")
}

async fn new_conversation(pool: &PgPool) -> Uuid {
    sqlx::query_scalar("INSERT INTO conversations DEFAULT VALUES RETURNING id")
        .fetch_one(pool)
        .await
        .expect("insert conversation")
}

#[tokio::test]
async fn an_imported_chatbot_loads_back_and_compiles() {
    let pool = helpers::fresh_pool().await;
    let path = fixture("table-booking.json");
    let id = import(&pool, &path, false).await;
    let row = chatbots::load(&pool, id)
        .await
        .expect("load")
        .expect("the row");
    assert_eq!(row.name, "Table Booking");
    assert_eq!(row.status, "draft");
    assert!(!row.is_active);
    let (bot, _) = compile(&row.to_doc()).expect("compiles");
    assert_eq!(bot.node_count(), 9);
    assert_eq!(
        chatbots::updated_at(&pool, id).await.expect("query"),
        Some(row.updated_at)
    );
    assert!(chatbots::load(&pool, Uuid::new_v4())
        .await
        .expect("query")
        .is_none());
}

/// The chatbot the turn stage starts for `text`: the store's active rows, the
/// engine's choice.
async fn pick_for_message(pool: &sqlx::PgPool, text: Option<&str>) -> Option<uuid::Uuid> {
    let candidates = chatbots::active_metadata(pool).await.expect("query");
    wabot::engine::compile::choose_chatbot(
        candidates
            .iter()
            .map(|(id, metadata)| (*id, metadata.as_ref())),
        text,
    )
}

#[tokio::test]
async fn the_oldest_active_chatbot_answers_unless_a_trigger_keyword_picks_another() {
    let pool = helpers::fresh_pool().await;
    assert!(pick_for_message(&pool, Some("hi")).await.is_none());
    let _inactive = import(&pool, &fixture("support-menu.json"), false).await;
    let default = import(&pool, &fixture("demo-center.json"), true).await;
    let triggered = import(&pool, &fixture("order-status.json"), true).await;
    let younger = import(&pool, &fixture("sector-loop.json"), true).await;

    let pick = |text: Option<&'static str>| {
        let pool = pool.clone();
        async move { pick_for_message(&pool, text).await }
    };
    assert_eq!(pick(Some("hello")).await, Some(default));
    assert_eq!(pick(None).await, Some(default));
    assert_eq!(pick(Some("Order 17 please")).await, Some(triggered));
    assert_eq!(pick(Some("SİPARİŞ")).await, Some(triggered));
    assert_eq!(
        pick(Some("orders")).await,
        Some(default),
        "keywords match whole words"
    );
    assert_ne!(pick(Some("hello")).await, Some(younger));
}

#[tokio::test]
async fn a_context_round_trips_through_save_and_load() {
    let pool = helpers::fresh_pool().await;
    let chatbot_id = import(&pool, &fixture("support-menu.json"), true).await;
    let conversation = new_conversation(&pool).await;
    let row = chatbots::load(&pool, chatbot_id)
        .await
        .expect("load")
        .expect("row");
    let (bot, _) = compile(&row.to_doc()).expect("compiles");
    let customer = Customer {
        phone: "905550000000".into(),
        name: Some("Can".into()),
        ..Customer::default()
    };
    let context = Context::start(Uuid::new_v4(), conversation, chatbot_id, &bot, &customer);
    let now = Utc::now();
    let result = run_turn(
        &bot,
        context,
        Event::ConversationStarted,
        now,
        &wabot::engine::http::NoHttp,
        &EngineLimits::default(),
    )
    .await;
    assert_eq!(result.context.status, ContextStatus::WaitingInput);

    let mut conn = pool.acquire().await.expect("connection");
    contexts::save(&mut conn, &result.context)
        .await
        .expect("save");
    let loaded = contexts::load_active(&pool, conversation)
        .await
        .expect("load")
        .expect("active");
    // PostgreSQL keeps microseconds; compare the rest exactly.
    assert_eq!(loaded.variables, result.context.variables);
    assert_eq!(loaded.node_history, result.context.node_history);
    assert_eq!(loaded.node_outputs, result.context.node_outputs);
    assert_eq!(loaded.current_node_id, "menu");
    assert_eq!(loaded.status, ContextStatus::WaitingInput);
    assert!(loaded.expires_at.is_some());
    assert_eq!(loaded.variables["customer_name"], json!("Can"));

    // The next turn completes it; saving again updates the same row.
    let done = run_turn(
        &bot,
        loaded,
        wabot::engine::Inbound::ButtonReply {
            id: "btn_hours".into(),
            title: "x".into(),
        }
        .into_event(),
        now,
        &wabot::engine::http::NoHttp,
        &EngineLimits::default(),
    )
    .await;
    let mut tx = pool.begin().await.expect("begin");
    assert!(contexts::load_active_for_update(&mut tx, conversation)
        .await
        .expect("lock")
        .is_some());
    contexts::save(&mut tx, &done.context).await.expect("save");
    tx.commit().await.expect("commit");
    assert!(contexts::load_active(&pool, conversation)
        .await
        .expect("load")
        .is_none());
    let ended = contexts::load(&pool, done.context.id)
        .await
        .expect("load")
        .expect("row");
    assert_eq!(ended.status, ContextStatus::Completed);
    assert_eq!(ended.completion_reason.as_deref(), Some("flow_completed"));
    assert!(ended.completed_at.is_some());
}

/// What the turn stage does between two messages: the context saved after each
/// turn and loaded for the next, so the re-ask count must live in the row.
#[tokio::test]
async fn typed_text_at_the_sample_menu_is_counted_across_saved_turns_and_the_reason_stored() {
    let pool = helpers::fresh_pool().await;
    let chatbot_id = import(&pool, &fixture("support-menu.json"), true).await;
    let conversation = new_conversation(&pool).await;
    let row = chatbots::load(&pool, chatbot_id)
        .await
        .expect("load")
        .expect("row");
    let (bot, _) = compile(&row.to_doc()).expect("compiles");
    let context = Context::start(
        Uuid::new_v4(),
        conversation,
        chatbot_id,
        &bot,
        &Customer::default(),
    );
    let id = context.id;
    let now = Utc::now();
    let turn = |context: Context, event: Event| {
        let bot = &bot;
        async move {
            run_turn(
                bot,
                context,
                event,
                now,
                &wabot::engine::http::NoHttp,
                &EngineLimits::default(),
            )
            .await
        }
    };
    let typed = |body: &str| {
        wabot::engine::Inbound::Text {
            body: body.to_owned(),
        }
        .into_event()
    };
    let mut conn = pool.acquire().await.expect("connection");
    let started = turn(context, Event::ConversationStarted).await;
    contexts::save(&mut conn, &started.context)
        .await
        .expect("save");
    for retry in 1..=2 {
        let loaded = contexts::load_active(&pool, conversation)
            .await
            .expect("load")
            .expect("still active");
        let result = turn(loaded, typed("hi")).await;
        assert_eq!(result.sends.len(), 1, "the menu again");
        assert_eq!(result.context.variables["__wabot"]["retries"], retry);
        contexts::save(&mut conn, &result.context)
            .await
            .expect("save");
    }
    let loaded = contexts::load_active(&pool, conversation)
        .await
        .expect("load")
        .expect("still active");
    let ended = turn(loaded, typed("hi")).await;
    assert!(ended.sends.is_empty());
    contexts::save(&mut conn, &ended.context)
        .await
        .expect("save");
    let row = contexts::load(&pool, id).await.expect("load").expect("row");
    assert_eq!(row.status, ContextStatus::Completed);
    assert!(!row.is_active);
    assert_eq!(
        row.completion_reason.as_deref(),
        Some("no_path_for_typed_text")
    );
    assert_eq!(row.node_outputs["menu"]["error"], "no_path_for_typed_text");
}

#[tokio::test]
async fn a_conversation_cannot_have_two_active_contexts() {
    let pool = helpers::fresh_pool().await;
    let chatbot_id = import(&pool, &fixture("support-menu.json"), true).await;
    let conversation = new_conversation(&pool).await;
    let row = chatbots::load(&pool, chatbot_id)
        .await
        .expect("load")
        .expect("row");
    let (bot, _) = compile(&row.to_doc()).expect("compiles");
    let first = Context::start(
        Uuid::new_v4(),
        conversation,
        chatbot_id,
        &bot,
        &Customer::default(),
    );
    let second = Context::start(
        Uuid::new_v4(),
        conversation,
        chatbot_id,
        &bot,
        &Customer::default(),
    );
    let mut conn = pool.acquire().await.expect("connection");
    contexts::save(&mut conn, &first).await.expect("first");
    let err = contexts::save(&mut conn, &second)
        .await
        .expect_err("a second active context");
    assert!(
        matches!(&err, sqlx::Error::Database(e) if e.code().as_deref() == Some("23505")),
        "{err}"
    );

    let ended = contexts::deactivate(
        &mut conn,
        conversation,
        ContextStatus::Stopped,
        "user_stopped",
        Utc::now(),
    )
    .await
    .expect("deactivate");
    assert_eq!(ended, 1);
    contexts::save(&mut conn, &second)
        .await
        .expect("the replacement");
    let active = contexts::load_active(&pool, conversation)
        .await
        .expect("load")
        .expect("active");
    assert_eq!(active.id, second.id);
    let old = contexts::load(&pool, first.id)
        .await
        .expect("load")
        .expect("row");
    assert_eq!(
        (old.status, old.completion_reason.as_deref()),
        (ContextStatus::Stopped, Some("user_stopped"))
    );
}

#[tokio::test]
async fn the_cache_serves_versions_by_hash_and_the_current_one_by_updated_at() {
    let doc = ChatbotDoc::from_json(&read_json(&fixture("order-status.json"))).expect("doc");
    let bot = Arc::new(compile(&doc).expect("compiles").0);
    let cache: ChatbotCache<&'static str> = ChatbotCache::new(2);
    let id = Uuid::new_v4();
    let v1 = Utc::now();
    assert!(cache.get(id, "h1").is_none());
    cache.insert(id, "h1", bot.clone(), Some(Arc::new("content")));
    assert!(
        cache.current(id, v1).is_none(),
        "not known as the row's graph yet"
    );
    cache.set_current(id, v1, "h1");
    let hit = cache.current(id, v1).expect("the current version");
    assert!(Arc::ptr_eq(&hit.chatbot, &bot));
    assert_eq!(hit.hash, "h1");
    assert_eq!(hit.unstored.as_deref(), Some(&"content"));
    assert!(
        cache
            .current(id, v1 + chrono::Duration::seconds(1))
            .is_none(),
        "a newer updatedAt misses"
    );
    // A pinned version stays served whatever the row holds now.
    assert!(cache.get(id, "h1").is_some());
    cache.stored(id, "h1");
    assert!(cache.get(id, "h1").unwrap().unstored.is_none());

    cache.insert(Uuid::new_v4(), "h2", bot.clone(), None);
    cache.get(id, "h1");
    cache.insert(Uuid::new_v4(), "h3", bot.clone(), None);
    assert_eq!(cache.len(), 2);
    assert!(
        cache.get(id, "h1").is_some(),
        "the least recently used entry went, not this one"
    );
    cache.insert(Uuid::new_v4(), "h4", bot.clone(), None);
    cache.insert(Uuid::new_v4(), "h5", bot.clone(), None);
    assert!(cache.get(id, "h1").is_none());
    assert!(
        cache.current(id, v1).is_none(),
        "an evicted version is no chatbot's current one"
    );
}
