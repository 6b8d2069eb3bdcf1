//! The migrations create WhatsApp Builder's schema exactly, revert cleanly, and the
//! constraints the seed design asks for hold.

use std::collections::BTreeMap;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::helpers::{create_empty_database, fresh_pool};

const TABLES: [&str; 10] = [
    "users",
    "conversations",
    "conversation_participants",
    "messages",
    "chatbots",
    "conversation_contexts",
    "whatsapp_config",
    "whatsapp_flows",
    "data_sources",
    "data_source_connections",
];

async fn public_tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
         AND tablename <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn public_types(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT t.typname::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
         WHERE n.nspname = 'public' AND t.typtype = 'e' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn migrations_apply_revert_to_empty_and_apply_again() {
    let url = create_empty_database().await;
    let pool = PgPoolOptions::new().connect(&url).await.unwrap();

    wabot::store::migrate(&pool).await.unwrap();
    let tables = public_tables(&pool).await;
    for t in TABLES {
        assert!(tables.contains(&t.to_string()), "{t} missing after migrate");
    }

    wabot::store::revert_all(&pool).await.unwrap();
    assert!(
        public_tables(&pool).await.is_empty(),
        "tables left after revert"
    );
    assert!(
        public_types(&pool).await.is_empty(),
        "enum types left after revert"
    );

    wabot::store::migrate(&pool).await.unwrap();
    assert_eq!(
        public_tables(&pool).await.len(),
        tables.len(),
        "the second apply creates the same tables"
    );
    let status = wabot::store::migration_status(&pool).await.unwrap();
    assert!(!status.is_empty() && status.iter().all(|m| m.applied));
}

/// `column -> (type, not null)`
type Columns = BTreeMap<String, (String, bool)>;

/// The columns of every table in `fixtures/schema/whatsapp-builder-columns.tsv`
/// (table, column, type, `not null`|`null`, tab-separated).
fn fixture_columns() -> BTreeMap<String, Columns> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/schema/whatsapp-builder-columns.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut tables: BTreeMap<String, Columns> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let fields: Vec<&str> = line.split('\t').collect();
        let [table, column, ty, null] = fields[..] else {
            panic!("not four fields: {line:?}");
        };
        tables
            .entry(table.to_owned())
            .or_default()
            .insert(column.to_owned(), (ty.to_owned(), null == "not null"));
    }
    tables
}

/// The columns of every table in WhatsApp Builder's own dump (`../shared`), when it is
/// beside the checkout.
fn reference_columns() -> Option<BTreeMap<String, Columns>> {
    let path = crate::helpers::shared_if_present("whatsapp-builder/reference-schema.sql")?;
    let sql = std::fs::read_to_string(path).ok()?;
    let mut tables = BTreeMap::new();
    let mut current: Option<(String, Columns)> = None;
    for line in sql.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("CREATE TABLE public.") {
            let name = rest.trim_end_matches(" (").trim().to_owned();
            current = Some((name, BTreeMap::new()));
            continue;
        }
        let Some((_, columns)) = current.as_mut() else {
            continue;
        };
        if line.starts_with(");") {
            let (name, columns) = current.take().unwrap();
            tables.insert(name, columns);
            continue;
        }
        if line.starts_with("CONSTRAINT") {
            continue;
        }
        let (name, rest) = if let Some(quoted) = line.strip_prefix('"') {
            let end = quoted.find('"').unwrap();
            (quoted[..end].to_owned(), quoted[end + 1..].trim())
        } else {
            let (n, r) = line.split_once(' ').unwrap();
            (n.to_owned(), r.trim())
        };
        let not_null = rest.contains("NOT NULL");
        let ty = rest
            .split(" DEFAULT ")
            .next()
            .unwrap()
            .trim_end_matches(',')
            .trim_end_matches(" NOT NULL")
            .replace("public.", "")
            .trim()
            .to_owned();
        columns.insert(name, (ty, not_null));
    }
    Some(tables)
}

#[test]
fn the_column_fixture_is_the_reference_dump() {
    // Skipped without `../shared`: the fixture then stands for the dump.
    if let Some(reference) = reference_columns() {
        assert_eq!(fixture_columns(), reference);
    }
}

#[tokio::test]
async fn the_ten_tables_match_the_reference_dump_column_for_column() {
    let pool = fresh_pool().await;
    let reference = fixture_columns();
    assert_eq!(reference.len(), 10, "the fixture describes ten tables");
    for (table, columns) in reference {
        let rows: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relname = $1 AND a.attnum > 0 \
               AND NOT a.attisdropped ORDER BY a.attnum",
        )
        .bind(&table)
        .fetch_all(&pool)
        .await
        .unwrap();
        let actual: Columns = rows
            .into_iter()
            .map(|(name, ty, nn)| (name, (ty, nn)))
            .collect();
        assert_eq!(actual, columns, "columns of {table}");
    }
}

#[tokio::test]
async fn enums_cover_every_message_type_and_the_sender_states() {
    let pool = fresh_pool().await;
    let values = |ty: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT e.enumlabel::text FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid \
                 WHERE t.typname = $1 ORDER BY e.enumsortorder",
            )
            .bind(ty)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let types = values("messages_type_enum").await;
    for t in [
        "text",
        "image",
        "video",
        "document",
        "audio",
        "sticker",
        "interactive",
        "button",
        "reaction",
        "location",
        "contacts",
        "order",
        "system",
        "unsupported",
        "unknown",
    ] {
        assert!(types.contains(&t.to_string()), "message type {t}");
    }
    assert_eq!(
        values("messages_status_enum").await,
        ["pending", "sent", "delivered", "read", "played", "failed"],
        "statuses in the order they may move"
    );
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Inserts a user, a conversation with both participants, a message, a chatbot and
/// its context; returns (user, conversation, chatbot).
async fn conversation_with_everything(pool: &PgPool) -> (uuid::Uuid, uuid::Uuid, uuid::Uuid) {
    let user: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO users (name, \"phoneNumber\") VALUES ('Ada', '905551112233') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let conversation: uuid::Uuid =
        sqlx::query_scalar("INSERT INTO conversations DEFAULT VALUES RETURNING id")
            .fetch_one(pool)
            .await
            .unwrap();
    sqlx::query(
        "INSERT INTO conversation_participants (\"conversationId\", \"userId\") VALUES ($1, $2)",
    )
    .bind(conversation)
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO messages (\"conversationId\", \"senderId\", content, \"timestamp\") \
         VALUES ($1, $2, '{\"text\":\"hi\",\"whatsappMessageId\":\"wamid.A\"}', now())",
    )
    .bind(conversation)
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    let chatbot: uuid::Uuid =
        sqlx::query_scalar("INSERT INTO chatbots (name) VALUES ('bot') RETURNING id")
            .fetch_one(pool)
            .await
            .unwrap();
    sqlx::query(
        "INSERT INTO conversation_contexts (\"conversationId\", \"chatbotId\", \"currentNodeId\") \
         VALUES ($1, $2, 'start')",
    )
    .bind(conversation)
    .bind(chatbot)
    .execute(pool)
    .await
    .unwrap();
    (user, conversation, chatbot)
}

#[tokio::test]
async fn deleting_a_conversation_cascades_to_messages_context_and_participants() {
    let pool = fresh_pool().await;
    let (_, conversation, _) = conversation_with_everything(&pool).await;
    sqlx::query("DELETE FROM conversations WHERE id = $1")
        .bind(conversation)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(count(&pool, "SELECT count(*) FROM messages").await, 0);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM conversation_contexts").await,
        0
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM conversation_participants").await,
        0
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM users").await, 1);
}

#[tokio::test]
async fn deleting_a_chatbot_cascades_to_its_contexts_and_a_user_to_its_participation() {
    let pool = fresh_pool().await;
    let (user, _, chatbot) = conversation_with_everything(&pool).await;
    sqlx::query("DELETE FROM chatbots WHERE id = $1")
        .bind(chatbot)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        count(&pool, "SELECT count(*) FROM conversation_contexts").await,
        0
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM conversations").await, 1);

    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        count(&pool, "SELECT count(*) FROM conversation_participants").await,
        0
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM conversations").await, 1);
}

#[tokio::test]
async fn data_source_deletes_cascade_to_connections_and_null_flows_and_dependents() {
    let pool = fresh_pool().await;
    let insert_source = |name: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, uuid::Uuid>(
                "INSERT INTO data_sources (name, type, base_url) \
                 VALUES ($1, 'REST_API', 'https://api.example.com') RETURNING id",
            )
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let source_a = insert_source("a").await;
    let source_b = insert_source("b").await;
    let parent: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO data_source_connections (name, data_source_id, endpoint) \
         VALUES ('brands', $1, '/brands') RETURNING id",
    )
    .bind(source_a)
    .fetch_one(&pool)
    .await
    .unwrap();
    let child: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO data_source_connections (name, data_source_id, endpoint, depends_on_connection_id) \
         VALUES ('products', $1, '/products', $2) RETURNING id",
    )
    .bind(source_b)
    .bind(parent)
    .fetch_one(&pool)
    .await
    .unwrap();
    let flow: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO whatsapp_flows (name, \"flowJson\", data_source_id) \
         VALUES ('f', '{}', $1) RETURNING id",
    )
    .bind(source_a)
    .fetch_one(&pool)
    .await
    .unwrap();

    sqlx::query("DELETE FROM data_sources WHERE id = $1")
        .bind(source_a)
        .execute(&pool)
        .await
        .unwrap();

    // The parent connection went with its data source; its dependent lost the link.
    let remaining: Vec<(uuid::Uuid, Option<uuid::Uuid>)> =
        sqlx::query_as("SELECT id, depends_on_connection_id FROM data_source_connections")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(remaining, vec![(child, None)]);
    let flow_source: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT data_source_id FROM whatsapp_flows WHERE id = $1")
            .bind(flow)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        flow_source, None,
        "the flow survives without its data source"
    );
}

#[tokio::test]
async fn only_one_whatsapp_config_row_can_be_active() {
    use wabot::store::whatsapp_config::{insert, NewConfig};
    let pool = fresh_pool().await;
    let new = |active| NewConfig {
        phone_number_id: "1",
        business_account_id: "2",
        access_token: "t",
        webhook_verify_token: "v",
        app_secret: None,
        is_active: active,
    };
    insert(&pool, &new(true)).await.unwrap();
    insert(&pool, &new(false)).await.unwrap();
    insert(&pool, &new(false)).await.unwrap();
    let err = insert(&pool, &new(true)).await.unwrap_err();
    let code = err
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("23505"), "unique violation: {err}");
}

#[tokio::test]
async fn users_phone_number_and_email_are_unique() {
    let pool = fresh_pool().await;
    sqlx::query("INSERT INTO users (name, \"phoneNumber\", email) VALUES ('a', '1', 'a@x.io')")
        .execute(&pool)
        .await
        .unwrap();
    for sql in [
        "INSERT INTO users (name, \"phoneNumber\") VALUES ('b', '1')",
        "INSERT INTO users (name, email) VALUES ('c', 'a@x.io')",
    ] {
        assert!(sqlx::query(sql).execute(&pool).await.is_err(), "{sql}");
    }
}

#[tokio::test]
async fn a_duplicate_wamid_is_refused_even_from_two_concurrent_transactions() {
    let pool = fresh_pool().await;
    let (user, conversation, _) = conversation_with_everything(&pool).await;
    let insert = "INSERT INTO messages (\"conversationId\", \"senderId\", content, \"timestamp\") \
                  VALUES ($1, $2, '{\"text\":\"x\",\"whatsappMessageId\":\"wamid.RACE\"}', now())";

    let mut first = pool.begin().await.unwrap();
    sqlx::query(insert)
        .bind(conversation)
        .bind(user)
        .execute(&mut *first)
        .await
        .unwrap();
    // The second transaction blocks on the first's uncommitted index entry and fails
    // once the first commits.
    let second = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let result = sqlx::query(insert)
                .bind(conversation)
                .bind(user)
                .execute(&mut *tx)
                .await;
            if result.is_ok() {
                tx.commit().await.unwrap();
            }
            result
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    first.commit().await.unwrap();
    let result = second.await.unwrap();
    assert!(result.is_err(), "the second insert of wamid.RACE must fail");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM messages WHERE content->>'whatsappMessageId' = 'wamid.RACE'"
        )
        .await,
        1
    );
}
