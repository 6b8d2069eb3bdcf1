//! What the sender does with Meta's errors, an expired token and a closed window.

use super::*;

#[tokio::test]
async fn throttling_server_errors_and_timeouts_are_retried_until_sent_once_in_order() {
    let s = Setup::new().await;
    let (conversation, to) = s.conversation(Utc::now()).await;
    let texts = texts("retry", 3);
    let ids = s.enqueue(conversation, &to, &texts).await;
    s.graph.fail_next(1, Failure::Throttled);
    s.graph.fail_next(1, Failure::ServerError);
    s.graph.fail_next(1, Failure::Hang);
    s.graph.fail_next(1, Failure::PairRate);

    let outcomes = drain(&s.sender(), &s.pool).await;
    let retries = outcomes
        .iter()
        .filter(|o| matches!(o, SendOutcome::Retrying { .. }))
        .count();
    assert_eq!(retries, 4);
    assert_eq!(
        accepted_texts(&s.graph, &to),
        texts,
        "each sent once, in order"
    );
    // The failed attempts were all of the first message: the others waited.
    let first_text = |r: &crate::support_graph::GraphRequest| r.text().map(str::to_owned);
    let attempts: Vec<_> = s.graph.requests().iter().filter_map(first_text).collect();
    assert_eq!(&attempts[..5], &vec![texts[0].clone(); 5][..]);
    for id in ids {
        assert_eq!(s.message(id).await.0, "sent");
    }
    let (attempts, last_error): (i32, Value) = sqlx::query_as(
        "SELECT attempts, last_error FROM send_jobs WHERE message_id = (SELECT id FROM messages \
         WHERE content->>'body' = $1)",
    )
    .bind(&texts[0])
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 5);
    assert_eq!(last_error["code"], 131056);
}

#[tokio::test]
async fn window_closed_and_undeliverable_fail_without_retry_and_the_conversation_goes_on() {
    let s = Setup::new().await;
    let (conversation, to) = s.conversation(Utc::now()).await;
    let texts = texts("perm", 3);
    let ids = s.enqueue(conversation, &to, &texts).await;
    s.graph.fail_next(1, Failure::WindowClosed);
    s.graph.fail_next(1, Failure::Undeliverable);

    drain(&s.sender(), &s.pool).await;
    assert_eq!(s.graph.requests().len(), 3, "no retries");
    let (status, content) = s.message(ids[0]).await;
    assert_eq!(status, "failed");
    assert_eq!(content["error"]["code"], 131047);
    assert!(content.get("whatsappMessageId").is_none());
    let (status, content) = s.message(ids[1]).await;
    assert_eq!(status, "failed");
    assert_eq!(content["error"]["code"], 131026);
    assert_eq!(content["error"]["fbtrace_id"], "FakeTrace");
    assert_eq!(s.message(ids[2]).await.0, "sent");
    assert_eq!(accepted_texts(&s.graph, &to), vec![texts[2].clone()]);
}

#[tokio::test]
async fn an_expired_token_holds_sending_until_the_token_changes() {
    let s = Setup::new().await;
    let (conversation, to) = s.conversation(Utc::now()).await;
    let ids = s.enqueue(conversation, &to, &texts("hold", 2)).await;
    s.graph.set_token("rotated-token");
    let sender = s.sender();

    assert_eq!(
        sender.send_one(Utc::now()).await.unwrap(),
        SendOutcome::Held
    );
    for _ in 0..3 {
        assert_eq!(
            sender.send_one(Utc::now()).await.unwrap(),
            SendOutcome::Held
        );
    }
    assert_eq!(s.graph.requests().len(), 1, "nothing is sent while held");
    assert_eq!(s.message(ids[0]).await.0, "pending");
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM send_jobs WHERE message_id = $1")
        .bind(ids[0])
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 0, "a held message loses no attempt");

    whatsapp_config::insert(
        &s.pool,
        &NewConfig {
            phone_number_id: helpers::PHONE_NUMBER_ID,
            business_account_id: helpers::BUSINESS_ACCOUNT_ID,
            access_token: "rotated-token",
            webhook_verify_token: helpers::VERIFY_TOKEN,
            app_secret: None,
            is_active: true,
        },
    )
    .await
    .unwrap();
    drain(&sender, &s.pool).await;
    assert_eq!(s.message(ids[0]).await.0, "sent");
    assert_eq!(s.message(ids[1]).await.0, "sent");
    let accepted = s.graph.accepted();
    assert_eq!(accepted.len(), 2);
    assert!(accepted
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer rotated-token")));
}

#[tokio::test]
async fn free_form_messages_outside_the_24_hour_window_fail_without_a_call() {
    let s = Setup::new().await;
    let (closed, to_closed) = s
        .conversation(Utc::now() - chrono::Duration::hours(25))
        .await;
    let (open, to_open) = s
        .conversation(Utc::now() - chrono::Duration::hours(23))
        .await;
    let failed = s.enqueue(closed, &to_closed, &texts("late", 1)).await;
    let sent = s.enqueue(open, &to_open, &texts("on time", 1)).await;

    drain(&s.sender(), &s.pool).await;
    let (status, content) = s.message(failed[0]).await;
    assert_eq!(status, "failed");
    assert_eq!(content["error"]["reason"], WINDOW_CLOSED);
    assert_eq!(s.message(sent[0]).await.0, "sent");
    let requests = s.graph.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].to(), Some(to_open.as_str()));
}

#[tokio::test]
async fn a_message_that_keeps_failing_retryably_fails_after_the_last_attempt() {
    let s = Setup::with(|c| c.worker.send_max_attempts = 3).await;
    let (conversation, to) = s.conversation(Utc::now()).await;
    let ids = s.enqueue(conversation, &to, &texts("tükenen", 2)).await;
    s.graph.fail_next(3, Failure::ServerError);

    let outcomes = drain(&s.sender(), &s.pool).await;
    assert!(
        matches!(
            outcomes.as_slice(),
            [
                SendOutcome::Retrying { attempts: 1, .. },
                SendOutcome::Retrying { attempts: 2, .. },
                SendOutcome::Failed { .. },
                SendOutcome::Sent { .. },
            ]
        ),
        "{outcomes:?}"
    );
    let (status, content) = s.message(ids[0]).await;
    assert_eq!(status, "failed");
    assert_eq!(content["error"]["code"], 131000);
    assert_eq!(content["error"]["httpStatus"], 500);
    assert_eq!(s.message(ids[1]).await.0, "sent");
    assert_eq!(s.graph.requests().len(), 4);
}

#[tokio::test]
async fn an_unreachable_graph_api_is_recorded_with_its_cause_and_no_code() {
    // A port that was just free: nothing answers there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let s = Setup::with(|c| {
        c.whatsapp.graph_api_base = format!("http://127.0.0.1:{port}");
        c.worker.send_max_attempts = 2;
    })
    .await;
    let token = s
        .config
        .whatsapp
        .access_token
        .as_ref()
        .map(|t| secrecy::ExposeSecret::expose_secret(t).to_owned())
        .expect("the test configuration has a token");
    let (conversation, to) = s.conversation(Utc::now()).await;
    let ids = s.enqueue(conversation, &to, &texts("unreachable", 1)).await;
    let sender = s.sender();

    // The first attempt is retried, and the job keeps why it failed.
    assert!(matches!(
        sender.send_one(Utc::now()).await.unwrap(),
        SendOutcome::Retrying { attempts: 1, .. }
    ));
    let last_error: Value =
        sqlx::query_scalar("SELECT last_error FROM send_jobs WHERE message_id = $1")
            .bind(ids[0])
            .fetch_one(&s.pool)
            .await
            .unwrap();
    let check = |error: &Value| {
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("cannot reach the Graph API: ")
                && message.contains("Connection refused"),
            "{error}"
        );
        assert_eq!(error["reason"], "Graph API unreachable", "{error}");
        // No code: Meta said nothing. Not `null`, not "None".
        assert!(error.get("code").is_none(), "{error}");
        let text = error.to_string();
        assert!(!text.contains(&token) && !text.contains("None"), "{text}");
    };
    check(&last_error);

    // The last attempt fails the message, which keeps the same error.
    drain(&sender, &s.pool).await;
    let (status, content) = s.message(ids[0]).await;
    assert_eq!(status, "failed");
    check(&content["error"]);
}
