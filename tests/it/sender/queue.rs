//! The queue: order per conversation, leases, concurrency, the rate limit, shapes.

use super::*;

/// The lease a test claim takes.
const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn only_the_oldest_unfinished_job_of_a_conversation_can_be_claimed() {
    let s = Setup::new().await;
    let (a, to_a) = s.conversation(Utc::now()).await;
    let (b, to_b) = s.conversation(Utc::now()).await;
    s.enqueue(a, &to_a, &texts("a", 3)).await;
    s.enqueue(b, &to_b, &texts("b", 2)).await;

    let now = Utc::now();
    let lease = now + chrono::Duration::seconds(30);
    let first = outbox::claim(&s.pool, "one", Some(now), LEASE, 10)
        .await
        .unwrap();
    assert_eq!(first.len(), 2, "one job per conversation");
    assert!(first
        .iter()
        .any(|j| j.conversation_id == a && j.body["text"]["body"] == "a mesaj 1"));
    assert!(first
        .iter()
        .any(|j| j.conversation_id == b && j.body["text"]["body"] == "b mesaj 1"));
    // While those are in flight nobody may take the conversations' next messages.
    assert!(outbox::claim(&s.pool, "two", Some(now), LEASE, 10)
        .await
        .unwrap()
        .is_empty());

    // A job whose holder died is claimable again once its lease has run out.
    let later = lease + chrono::Duration::seconds(1);
    let again = outbox::claim(&s.pool, "two", Some(later), LEASE, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|j| j.body["text"]["body"]
        .as_str()
        .unwrap()
        .ends_with("mesaj 1")));
    assert!(s.graph.requests().is_empty());
}

#[tokio::test]
async fn a_crashed_senders_job_is_sent_by_another_once_its_lease_expires() {
    let s = Setup::new().await;
    let (conversation, to) = s.conversation(Utc::now()).await;
    let ids = s.enqueue(conversation, &to, &texts("crash", 2)).await;
    let now = Utc::now();
    // A sender claims the first message and dies before sending it.
    let lease = now + chrono::Duration::seconds(30);
    assert_eq!(
        outbox::claim(&s.pool, "crashed", Some(now), LEASE, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    let sender = s.sender();
    assert_eq!(sender.send_one(now).await.unwrap(), SendOutcome::Idle);
    assert!(s.graph.requests().is_empty());
    let after_lease = lease + chrono::Duration::seconds(1);
    let outcome = sender.send_one(after_lease).await.unwrap();
    assert!(
        matches!(&outcome, SendOutcome::Sent { message_id, .. } if *message_id == ids[0]),
        "{outcome:?}"
    );
    let outcome = sender.send_one(after_lease).await.unwrap();
    assert!(
        matches!(&outcome, SendOutcome::Sent { message_id, .. } if *message_id == ids[1]),
        "{outcome:?}"
    );
    assert_eq!(accepted_texts(&s.graph, &to), texts("crash", 2));
}

#[tokio::test]
async fn messages_are_sent_in_order_per_conversation_with_wamids_stored() {
    let s = Setup::new().await;
    let mut expected = Vec::new();
    for c in 0..3 {
        let (conversation, to) = s.conversation(Utc::now()).await;
        let texts = texts(&format!("c{c}"), 4);
        let ids = s.enqueue(conversation, &to, &texts).await;
        expected.push((to, texts, ids));
    }
    let sender = Arc::new(s.sender());
    let wake = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(sender.clone().run(wake.clone(), shutdown.clone()));
    wake.notify_one();

    s.graph.wait_for_accepted(12, Duration::from_secs(10)).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the sender stops on shutdown")
        .unwrap();

    let requests = s.graph.requests();
    assert_eq!(requests.len(), 12, "each message sent once");
    for r in &requests {
        assert_eq!(
            r.path,
            format!("/v24.0/{}/messages", helpers::PHONE_NUMBER_ID)
        );
        assert_eq!(r.authorization.as_deref(), Some("Bearer test-access-token"));
    }
    for (to, texts, ids) in &expected {
        assert_eq!(&accepted_texts(&s.graph, to), texts);
        for (id, request) in ids
            .iter()
            .zip(s.graph.accepted().iter().filter(|r| r.to() == Some(to)))
        {
            let (status, content) = s.message(*id).await;
            assert_eq!(status, "sent");
            let Outcome::Accepted { wamid } = &request.outcome else {
                unreachable!()
            };
            assert_eq!(content["whatsappMessageId"], wamid.as_str());
            assert_eq!(content["body"], request.text().unwrap());
            assert_eq!(content["text"], request.text().unwrap());
        }
    }
    assert_eq!(outbox::open_jobs(&s.pool).await.unwrap(), 0);
}

#[tokio::test]
async fn the_send_rate_limit_spreads_a_burst() {
    let s = Setup::with(|c| c.worker.send_rate_per_sec = 10).await;
    for i in 0..25 {
        let (conversation, to) = s.conversation(Utc::now()).await;
        s.enqueue(conversation, &to, &texts(&format!("burst{i}"), 1))
            .await;
    }
    let sender = Arc::new(s.sender());
    let shutdown = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let running = tokio::spawn(sender.run(Arc::new(Notify::new()), shutdown.clone()));
    s.graph.wait_for_accepted(25, Duration::from_secs(15)).await;
    let elapsed = started.elapsed();
    shutdown.cancel();
    running.await.unwrap();
    // Ten at once, then fifteen at ten a second: about 1.5 s. Loosely bounded.
    assert!(elapsed >= Duration::from_millis(1000), "{elapsed:?}");
    assert_eq!(s.graph.requests().len(), 25);
}

#[tokio::test]
async fn two_senders_on_one_database_never_send_a_message_twice() {
    let s = Setup::new().await;
    let mut expected = Vec::new();
    for c in 0..8 {
        let (conversation, to) = s.conversation(Utc::now()).await;
        let texts = texts(&format!("p{c}"), 5);
        s.enqueue(conversation, &to, &texts).await;
        expected.push((to, texts));
    }
    let second_pool = PgPoolOptions::new()
        .max_connections(5)
        .connect_with((*s.pool.connect_options()).clone())
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let mut running = Vec::new();
    for pool in [s.pool.clone(), second_pool] {
        let sender = Arc::new(s.sender_on(pool));
        running.push(tokio::spawn(
            sender.run(Arc::new(Notify::new()), shutdown.clone()),
        ));
    }
    s.graph.wait_for_accepted(40, Duration::from_secs(15)).await;
    // Give a double send the chance to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    for r in running {
        r.await.unwrap();
    }
    assert_eq!(s.graph.requests().len(), 40);
    for (to, texts) in &expected {
        assert_eq!(&accepted_texts(&s.graph, to), texts);
    }
    let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE status = 'sent'")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(sent, 40);
}

#[tokio::test]
async fn interactive_messages_are_stored_in_whatsapp_builders_shape_and_sent_in_metas() {
    let s = Setup::new().await;
    let (conversation, to) = s.conversation(Utc::now()).await;
    let msg = Outgoing::Buttons {
        header: Some("Başlık".into()),
        body: "Hangisini istersiniz?".into(),
        footer: None,
        buttons: vec![
            Choice {
                id: "btn-0".into(),
                title: "Çay".into(),
                description: None,
            },
            Choice {
                id: "btn-1".into(),
                title: "Kahve".into(),
                description: None,
            },
        ],
    };
    let mut tx = s.pool.begin().await.unwrap();
    let id = outbox::enqueue(&mut tx, &outbound_row(conversation, s.business, &to, &msg))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (kind, sender_id): (String, Uuid) =
        sqlx::query_as("SELECT type::text, \"senderId\" FROM messages WHERE id = $1")
            .bind(id)
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!(kind, "interactive");
    assert_eq!(sender_id, s.business);
    assert_eq!(s.message(id).await.0, "pending");

    drain(&s.sender(), &s.pool).await;
    let request = &s.graph.accepted()[0];
    assert_eq!(request.body["type"], "interactive");
    assert_eq!(
        request.body["interactive"]["action"]["buttons"][1]["reply"]["title"],
        "Kahve"
    );
    let (status, content) = s.message(id).await;
    assert_eq!(status, "sent");
    assert_eq!(content["type"], "button");
    assert_eq!(content["body"]["text"], "Hangisini istersiniz?");
    assert_eq!(content["header"]["text"], "Başlık");
    assert_eq!(content["action"], request.body["interactive"]["action"]);
}

#[tokio::test]
async fn read_receipts_and_the_typing_indicator_reach_the_graph_api() {
    let s = Setup::new().await;
    let graph = GraphClient::new(&s.config.whatsapp).unwrap();
    let store = CredentialStore::new(s.pool.clone(), s.config.whatsapp.clone());
    let credentials = store.current().await.unwrap();
    graph.show_typing(&credentials, "wamid.IN1").await.unwrap();
    graph.mark_read(&credentials, "wamid.IN2").await.unwrap();
    let requests = s.graph.requests();
    assert_eq!(requests[0].body["message_id"], "wamid.IN1");
    assert_eq!(requests[0].body["status"], "read");
    assert_eq!(requests[0].body["typing_indicator"]["type"], "text");
    assert!(requests[1].body.get("typing_indicator").is_none());
}

#[tokio::test]
async fn wabot_serve_sends_a_message_another_process_queued() {
    let graph = FakeGraph::start().await;
    let url = graph.url();
    let mut app = helpers::spawn_app_with(|c| {
        c.worker.enabled = true;
        c.whatsapp.graph_api_base = url;
        // A job this process did not make reaches it through the recovery poll.
        c.worker.poll_interval_ms = 200;
    })
    .await;
    let business = insert_user(&app.pool, helpers::PHONE_NUMBER_ID, "Business").await;
    insert_user(&app.pool, "905550000001", "Ayşe").await;
    let conversation: Uuid = sqlx::query_scalar(
        "INSERT INTO conversations (\"lastCustomerMessageAt\") VALUES (now()) RETURNING id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    // Let the sender reach its idle wait first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut tx = app.pool.begin().await.unwrap();
    let msg = Outgoing::Text {
        body: "Hoş geldiniz!".into(),
    };
    outbox::enqueue(
        &mut tx,
        &outbound_row(conversation, business, "905550000001", &msg),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let accepted = graph.wait_for_accepted(1, Duration::from_secs(5)).await;
    assert_eq!(accepted[0].text(), Some("Hoş geldiniz!"));
    app.stop().await;
}

#[tokio::test]
async fn a_status_reported_before_the_wamid_was_stored_is_applied_when_it_is() {
    let s = Setup::new().await;
    let (conversation, to) = s.conversation(Utc::now()).await;
    let ids = s.enqueue(conversation, &to, &texts("erken", 1)).await;
    // Meta's `delivered` webhook wins the race against the sender's own record.
    let wamid = s.graph.next_wamid();
    sqlx::query("INSERT INTO message_statuses (wamid, status) VALUES ($1, 'delivered')")
        .bind(&wamid)
        .execute(&s.pool)
        .await
        .unwrap();

    drain(&s.sender(), &s.pool).await;
    let (status, content) = s.message(ids[0]).await;
    assert_eq!(status, "delivered");
    assert_eq!(content["whatsappMessageId"], wamid.as_str());
    let applied: Option<Uuid> =
        sqlx::query_scalar("SELECT message_id FROM message_statuses WHERE status = 'delivered'")
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!(applied, Some(ids[0]));
}

#[tokio::test]
async fn a_reply_is_leased_at_once_only_when_every_older_reply_is_held_by_the_same_process() {
    let s = Setup::new().await;
    let (conversation, to) = s.conversation(Utc::now()).await;
    let row = |text: &str| {
        outbound_row(
            conversation,
            s.business,
            &to,
            &Outgoing::Text { body: text.into() },
        )
    };
    // An older reply nobody holds (another process's, or one handed back).
    s.enqueue(conversation, &to, &texts("old", 1)).await;
    let mut tx = s.pool.begin().await.unwrap();
    let jobs = outbox::enqueue_batch(&mut tx, &[row("new")], "p1", Some(LEASE))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(jobs[0].token, None, "it waits behind the older one");

    // Once this process holds every older reply, the next is leased to it at once.
    let claimed = outbox::claim(&s.pool, "p1", None, LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let mut tx = s.pool.begin().await.unwrap();
    let jobs = outbox::enqueue_batch(&mut tx, &[row("newer")], "p1", Some(LEASE))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        jobs[0].token, None,
        "the unleased middle one still blocks it"
    );
    let mut tx = s.pool.begin().await.unwrap();
    sqlx::query("UPDATE send_jobs SET done_at = now() WHERE locked_by IS NULL")
        .execute(&mut *tx)
        .await
        .unwrap();
    let jobs = outbox::enqueue_batch(&mut tx, &[row("newest")], "p1", Some(LEASE))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        jobs[0]
            .token
            .as_deref()
            .is_some_and(|t| t.starts_with("p1:")),
        "{:?}",
        jobs[0].token
    );
}

/// Meta accepted a send whose outcome this process never recorded (it died during
/// the call): the message's `sent` status, which carries the callback data wabot put
/// in the send, finishes the job, so that no other sender sends it again once the
/// lease expires.
#[tokio::test]
async fn a_status_naming_an_unrecorded_send_finishes_it_instead_of_a_second_send() {
    let s = Setup::new().await;
    let (conversation, to) = s.conversation(Utc::now()).await;
    let ids = s.enqueue(conversation, &to, &texts("kaza", 1)).await;
    let now = Utc::now();
    let claimed = outbox::claim(&s.pool, "killed", Some(now), LEASE, 10)
        .await
        .unwrap();
    let callback = claimed[0].body["biz_opaque_callback_data"]
        .as_str()
        .expect("every send carries its callback data")
        .to_owned();
    assert_eq!(callback, format!("wabot:{}", ids[0]));

    // The process is gone; Meta's status webhook arrives.
    let value = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "W",
        "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"phone_number_id": crate::helpers::PHONE_NUMBER_ID},
            "statuses": [{"id": "wamid.CONFIRMED", "status": "sent", "timestamp": "1700000000",
                          "recipient_id": to, "biz_opaque_callback_data": callback}]}}]}]});
    let envelope = wabot::whatsapp::webhook::Envelope::from_value(&value).unwrap();
    let rows = wabot::worker::ingest::rows(
        &envelope,
        wabot::store::ingest::RawEvent::New(value.to_string()),
        Utc::now(),
        Some(crate::helpers::PHONE_NUMBER_ID),
    );
    wabot::store::ingest::ingest_batch(
        &s.pool,
        &[rows],
        None,
        wabot::store::events::Subscribed::NONE,
    )
    .await
    .unwrap();

    let (status, content) = s.message(ids[0]).await;
    assert_eq!(status, "sent");
    assert_eq!(content["whatsappMessageId"], "wamid.CONFIRMED");
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM send_jobs WHERE done_at IS NULL")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(open, 0, "the send is finished");
    // After the dead process's lease, nobody sends it again.
    let after_lease = now + chrono::Duration::seconds(31);
    assert_eq!(
        s.sender().send_one(after_lease).await.unwrap(),
        SendOutcome::Idle
    );
    assert!(s.graph.requests().is_empty());
    // The status itself was applied to the message it confirmed.
    let applied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM message_statuses WHERE wamid = 'wamid.CONFIRMED' AND applied_at IS NOT NULL",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert_eq!(applied, 1);
}
