//! Every kind of inbound message at every kind of question, validation by kind, and
//! the media, CTA URL and location request messages a chatbot sends (pure engine).

use serde_json::{json, Value};
use wabot::engine::context::reason;
use wabot::engine::{
    compile_json, AnswerKind, ContextStatus, Inbound, MediaMessage, MediaType, Outgoing,
};

use crate::engine::{bodies, fixture, read_json, Chat};

fn image(caption: Option<&str>) -> Inbound {
    media(AnswerKind::Image, caption)
}

fn media(kind: AnswerKind, caption: Option<&str>) -> Inbound {
    Inbound::Media(MediaMessage {
        kind,
        caption: caption.map(str::to_owned),
        mime_type: Some(
            match kind {
                AnswerKind::Image => "image/jpeg",
                AnswerKind::Audio => "audio/ogg; codecs=opus",
                AnswerKind::Document => "application/pdf",
                AnswerKind::Video => "video/mp4",
                _ => "image/webp",
            }
            .into(),
        ),
        media_id: Some(format!("{}-1", kind.as_str())),
        sha256: Some("c2hhMjU2".into()),
        filename: (kind == AnswerKind::Document).then(|| "policy.pdf".into()),
        voice: (kind == AnswerKind::Audio).then_some(true),
        stored: None,
    })
}

fn location() -> Inbound {
    Inbound::Location {
        latitude: Some(41.0082),
        longitude: Some(28.9784),
        name: Some("Sultanahmet".into()),
        address: Some("Fatih, İstanbul".into()),
    }
}

fn contacts() -> Inbound {
    Inbound::Contacts {
        contacts: json!([{"name": {"formatted_name": "Ali Veli", "first_name": "Ali", "suffix": ""},
                          "phones": [{"phone": "+90 555 000 00 00", "wa_id": "905550000000", "type": "CELL"}],
                          "emails": [], "urls": null}]),
    }
}

fn unsupported() -> Inbound {
    Inbound::Other {
        type_name: "order".into(),
    }
}

/// start → the question `q` (with `data`) → `next` ("Got it: {{question_1.response}}"),
/// plus `default_to` / `exhausted_to` message nodes when asked for.
fn bot(data: Value, default_edge: bool, exhausted_edge: bool) -> Value {
    let mut question = json!({"type": "question", "label": "Q"});
    for (k, v) in data.as_object().unwrap() {
        question[k] = v.clone();
    }
    let mut edges = vec![json!({"id": "e1", "source": "start", "target": "q"})];
    let choices = question["questionType"] == "buttons" || question["questionType"] == "list";
    if choices {
        edges.push(json!({"id": "e2", "source": "q", "target": "picked", "sourceHandle": "a"}));
        if default_edge {
            edges.push(
                json!({"id": "e3", "source": "q", "target": "next", "sourceHandle": "default"}),
            );
        }
    } else {
        edges.push(json!({"id": "e3", "source": "q", "target": "next"}));
    }
    if exhausted_edge {
        edges.push(
            json!({"id": "e4", "source": "q", "target": "gave_up", "sourceHandle": "exhausted"}),
        );
    }
    json!({"name": "Kinds", "nodes": [
        {"id": "start", "type": "start", "data": {"type": "start", "label": "Start"}},
        {"id": "q", "type": "question", "data": question},
        {"id": "next", "type": "message", "data": {"type": "message", "label": "Next",
            "content": "Got it: {{question_1.response.type}} {{question_1.response.latitude}}"}},
        {"id": "picked", "type": "message", "data": {"type": "message", "label": "Picked", "content": "Picked A"}},
        {"id": "gave_up", "type": "message", "data": {"type": "message", "label": "Gave up", "content": "Let us call you."}}
    ], "edges": edges})
}

fn text_question(validation: Option<Value>) -> Value {
    let mut data = json!({"questionType": "text", "content": "Tell us"});
    if let Some(v) = validation {
        data["validation"] = v;
    }
    bot(data, false, false)
}

fn buttons_question(default_edge: bool, exhausted: bool) -> Value {
    bot(
        json!({"questionType": "buttons", "content": "Pick one",
               "buttons": [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}],
               "invalidChoiceMessage": "Please tap a button."}),
        default_edge,
        exhausted,
    )
}

fn list_question(default_edge: bool) -> Value {
    bot(
        json!({"questionType": "list", "content": "Pick a row", "listButtonText": "Rows",
               "listSections": [{"title": "S", "rows": [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}]}]}),
        default_edge,
        false,
    )
}

fn location_question(exhausted: bool) -> Value {
    bot(
        json!({"questionType": "location", "content": "Where are you?"}),
        false,
        exhausted,
    )
}

async fn started(doc: &Value) -> Chat {
    let mut chat = Chat::new(doc);
    chat.start().await;
    assert_eq!(chat.ctx.status, ContextStatus::WaitingInput);
    chat
}

async fn send(chat: &mut Chat, inbound: Inbound) -> Vec<Outgoing> {
    chat.event(inbound.into_event()).await
}

fn output(chat: &Chat) -> Value {
    Value::Object(chat.ctx.node_outputs.clone())["q"].clone()
}

#[tokio::test]
async fn a_text_question_takes_media_locations_and_contacts_as_structured_answers() {
    let mut chat = started(&text_question(None)).await;
    let sends = send(&mut chat, image(Some("the dent"))).await;
    assert_eq!(
        bodies(&sends),
        ["Got it: image {{question_1.response.latitude}}"]
    );
    assert_eq!(
        chat.var("question_1.response"),
        Some(
            json!({"type": "image", "caption": "the dent", "mime_type": "image/jpeg",
                    "media_id": "image-1", "sha256": "c2hhMjU2", "location": null})
        )
    );
    assert_eq!(output(&chat)["messageType"], "image");
    assert_eq!(output(&chat)["userResponse"]["media_id"], "image-1");

    let mut chat = started(&text_question(None)).await;
    let sends = send(&mut chat, location()).await;
    assert_eq!(
        bodies(&sends),
        ["Got it: {{question_1.response.type}} 41.0082"]
    );
    assert_eq!(
        chat.var("question_1.response"),
        Some(
            json!({"latitude": 41.0082, "longitude": 28.9784, "name": "Sultanahmet",
                    "address": "Fatih, İstanbul"})
        )
    );

    let mut chat = started(&text_question(None)).await;
    send(&mut chat, contacts()).await;
    assert_eq!(
        chat.var("question_1.response"),
        Some(
            json!([{"name": {"formatted_name": "Ali Veli", "first_name": "Ali"},
                     "phones": [{"phone": "+90 555 000 00 00", "wa_id": "905550000000", "type": "CELL"}]}])
        )
    );
    assert_eq!(
        chat.var("question_1.response[0].phones[0].wa_id"),
        Some(json!("905550000000"))
    );

    for kind in [
        AnswerKind::Video,
        AnswerKind::Audio,
        AnswerKind::Document,
        AnswerKind::Sticker,
    ] {
        let mut chat = started(&text_question(None)).await;
        send(&mut chat, media(kind, None)).await;
        assert_eq!(
            chat.var("question_1.response.type"),
            Some(json!(kind.as_str()))
        );
        assert_eq!(chat.ctx.status, ContextStatus::Completed, "{kind:?}");
    }
    let mut chat = started(&text_question(None)).await;
    send(&mut chat, media(AnswerKind::Document, None)).await;
    assert_eq!(
        chat.var("question_1.response.filename"),
        Some(json!("policy.pdf"))
    );
    let mut chat = started(&text_question(None)).await;
    send(&mut chat, media(AnswerKind::Audio, None)).await;
    assert_eq!(chat.var("question_1.response.voice"), Some(json!(true)));
}

#[tokio::test]
async fn an_unsupported_message_at_a_text_question_is_asked_again_with_the_reason_then_ends() {
    let mut chat = started(&text_question(None)).await;
    for _ in 0..2 {
        let sends = send(&mut chat, unsupported()).await;
        assert_eq!(
            bodies(&sends),
            [wabot::engine::question::UNSUPPORTED_PROMPT]
        );
        assert_eq!(chat.ctx.status, ContextStatus::WaitingInput);
        assert_eq!(output(&chat)["error"], reason::UNSUPPORTED_MESSAGE);
        assert_eq!(output(&chat)["messageType"], "unsupported");
        assert_eq!(output(&chat)["userResponse"], json!({"type": "order"}));
    }
    let sends = send(&mut chat, unsupported()).await;
    assert!(sends.is_empty(), "{sends:?}");
    assert_eq!(chat.ctx.status, ContextStatus::Completed);
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::UNSUPPORTED_MESSAGE)
    );

    // Text after a re-ask is an ordinary answer.
    let mut chat = started(&text_question(None)).await;
    send(&mut chat, unsupported()).await;
    let sends = chat.say("just text").await;
    assert_eq!(
        bodies(&sends),
        ["Got it: {{question_1.response.type}} {{question_1.response.latitude}}"]
    );
    assert_eq!(chat.var("question_1.response"), Some(json!("just text")));
}

#[tokio::test]
async fn at_a_buttons_or_list_question_every_kind_follows_default_as_typed_text_does() {
    for inbound in [image(None), location(), contacts()] {
        let mut chat = started(&buttons_question(true, false)).await;
        let sends = send(&mut chat, inbound.clone()).await;
        assert_eq!(bodies(&sends).len(), 1, "{inbound:?}: {sends:?}");
        assert!(bodies(&sends)[0].starts_with("Got it:"), "{sends:?}");
        assert_eq!(chat.ctx.status, ContextStatus::Completed);
        assert!(chat.var("question_1.response").is_some());
    }

    for inbound in [image(Some("x")), location()] {
        let mut chat = started(&list_question(true)).await;
        let sends = send(&mut chat, inbound).await;
        assert!(bodies(&sends)[0].starts_with("Got it:"), "{sends:?}");
    }
    let mut chat = started(&list_question(true)).await;
    send(&mut chat, location()).await;
    assert_eq!(
        chat.var("question_1.response.name"),
        Some(json!("Sultanahmet"))
    );
    // A choice is still a choice.
    let mut chat = started(&list_question(true)).await;
    assert_eq!(bodies(&chat.pick("a").await), ["Picked A"]);
}

#[tokio::test]
async fn at_a_choice_question_without_default_other_kinds_are_asked_again_then_exhausted() {
    let mut chat = started(&buttons_question(false, true)).await;
    for inbound in [image(None), location()] {
        let sends = send(&mut chat, inbound).await;
        assert_eq!(bodies(&sends)[0], "Please tap a button.");
        assert!(matches!(&sends[1], Outgoing::Buttons { .. }), "{sends:?}");
        assert_eq!(output(&chat)["error"], reason::NO_PATH_FOR_TYPED_TEXT);
    }
    let sends = send(&mut chat, contacts()).await;
    assert_eq!(bodies(&sends), ["Let us call you."]);
    assert_eq!(chat.ctx.status, ContextStatus::Completed);

    // Without `exhausted` either, an unsupported message ends it with its reason.
    let mut chat = started(&buttons_question(false, false)).await;
    for _ in 0..3 {
        send(&mut chat, unsupported()).await;
    }
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::UNSUPPORTED_MESSAGE)
    );
}

#[tokio::test]
async fn a_location_question_asks_with_a_location_request_and_takes_only_a_location() {
    let mut chat = Chat::new(&location_question(true));
    let sends = chat.start().await;
    assert_eq!(
        sends,
        [Outgoing::LocationRequest {
            body: "Where are you?".into()
        }]
    );
    let sends = chat.say("Kadıköy").await;
    assert_eq!(
        bodies(&sends),
        ["Please share a location.", "Where are you?"]
    );
    assert!(matches!(sends[1], Outgoing::LocationRequest { .. }));
    assert_eq!(chat.var("question_1.response"), None);
    let sends = send(&mut chat, image(None)).await;
    assert_eq!(bodies(&sends)[0], "Please share a location.");
    assert_eq!(output(&chat)["error"], reason::VALIDATION_FAILED);
    let sends = send(&mut chat, location()).await;
    assert_eq!(
        bodies(&sends),
        ["Got it: {{question_1.response.type}} 41.0082"]
    );
    assert_eq!(
        chat.var("question_1.response.longitude"),
        Some(json!(28.9784))
    );
    assert_eq!(output(&chat)["messageType"], "location");

    // Past the retries it leaves by `exhausted`.
    let mut chat = started(&location_question(true)).await;
    chat.say("no").await;
    chat.say("no").await;
    assert_eq!(bodies(&chat.say("no").await), ["Let us call you."]);

    // A skip word leaves by the default edge.
    let mut chat = started(&location_question(false)).await;
    let sends = chat.say("skip").await;
    assert!(bodies(&sends)[0].starts_with("Got it:"), "{sends:?}");
    assert_eq!(chat.var("question_1.response"), None);
}

#[tokio::test]
async fn validation_types_ask_for_a_kind_and_re_ask_with_the_nodes_error_text() {
    let v = |t: &str| Some(json!({"type": t, "errorMessage": format!("Send {t}!")}));
    let cases: [(&str, Inbound, bool); 12] = [
        ("image", image(None), true),
        ("image", media(AnswerKind::Document, None), false),
        ("image", location(), false),
        ("document", media(AnswerKind::Document, None), true),
        ("document", image(None), false),
        ("media", media(AnswerKind::Audio, None), true),
        ("media", media(AnswerKind::Sticker, None), true),
        ("media", media(AnswerKind::Video, None), true),
        ("media", location(), false),
        ("location", location(), true),
        ("location", contacts(), false),
        ("location", unsupported(), false),
    ];
    for (rule, inbound, accepted) in cases {
        let mut chat = started(&text_question(v(rule))).await;
        let sends = send(&mut chat, inbound.clone()).await;
        if accepted {
            assert!(
                bodies(&sends)[0].starts_with("Got it:"),
                "{rule} {inbound:?}"
            );
        } else {
            assert_eq!(
                bodies(&sends),
                [format!("Send {rule}!")],
                "{rule} {inbound:?}"
            );
            assert_eq!(chat.ctx.status, ContextStatus::WaitingInput);
        }
    }
    // Text is not a photo; the default text when the node has none.
    let mut chat = started(&text_question(Some(json!({"type": "image"})))).await;
    assert_eq!(bodies(&chat.say("here").await), ["Please send a photo."]);
    assert_eq!(output(&chat), Value::Null, "a typed retry records nothing");
    let mut chat = started(&text_question(Some(
        json!({"type": "location", "maxRetries": 0}),
    )))
    .await;
    let sends = chat.say("Kadıköy").await;
    assert!(sends.is_empty());
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::VALIDATION_FAILED)
    );
    // A rule about text (an email) takes no photo.
    let mut chat = started(&text_question(Some(json!({"type": "email"})))).await;
    assert_eq!(
        bodies(&send(&mut chat, image(None)).await),
        ["Please answer with text."]
    );
    assert_eq!(bodies(&chat.say("a@b.example").await).len(), 1);
    assert_eq!(chat.var("question_1.response"), Some(json!("a@b.example")));
}

#[tokio::test]
async fn the_sample_claims_desk_sends_media_a_cta_url_and_a_location_request() {
    let doc = read_json(&fixture("claims-desk.json"));
    let mut chat = Chat::new(&doc);
    let sends = chat.start().await;
    assert_eq!(
        sends,
        [
            Outgoing::Text {
                body: "Welcome to the Harbour Insurance claims desk, Ayşe.".into()
            },
            Outgoing::Media {
                media: MediaType::Image,
                link: Some("https://cdn.harbour.example/claims/desk.jpg".into()),
                id: None,
                caption: Some("Our claims team".into()),
                filename: None,
            },
            Outgoing::Text {
                body: "Please send a photo of the damage.".into()
            },
        ]
    );
    assert_eq!(
        bodies(&chat.say("it is bad").await),
        ["A photo, please: tap the camera button."]
    );
    send(&mut chat, image(None)).await;
    let sends = send(&mut chat, location()).await;
    assert_eq!(
        bodies(&sends),
        [
            "Thanks! Photo image-1 (image/jpeg), place: 41.0082, 28.9784 Sultanahmet",
            "Share the address where our assessor should come."
        ]
    );
    assert!(matches!(sends[1], Outgoing::LocationRequest { .. }));
    assert_eq!(
        bodies(&chat.say("Moda").await),
        [
            "Please tap Send location to share it.",
            "Share the address where our assessor should come."
        ]
    );
    let sends = send(&mut chat, location()).await;
    assert_eq!(
        sends,
        [
            Outgoing::CtaUrl {
                header: Some("Claim opened".into()),
                body: "We will come to Sultanahmet. Follow your claim online.".into(),
                footer: Some("Harbour Insurance".into()),
                button: "Track claim".into(),
                url: "https://claims.harbour.example/track?at=41.0082,28.9784".into(),
            },
            Outgoing::Media {
                media: MediaType::Document,
                link: Some("https://cdn.harbour.example/claims/form.pdf".into()),
                id: None,
                caption: Some("Sign and send it back".into()),
                filename: Some("claim-form.pdf".into()),
            },
        ]
    );
    assert_eq!(chat.ctx.status, ContextStatus::Completed);
}

#[tokio::test]
async fn a_media_link_that_is_no_url_once_filled_in_is_not_sent_and_the_run_goes_on() {
    let doc = json!({"name": "M", "nodes": [
        {"id": "start", "type": "start", "data": {"type": "start"}},
        {"id": "m", "type": "message", "data": {"type": "message", "label": "M", "content": "Your ticket:",
            "media": {"type": "document", "link": "{{ticket_url}}", "filename": "{{ticket}}.pdf"}}},
        {"id": "v", "type": "message", "data": {"type": "message", "label": "V",
            "media": {"type": "audio", "id": "{{voice_id}}"}}},
        {"id": "bye", "type": "message", "data": {"type": "message", "label": "Bye", "content": "Bye"}}
    ], "edges": [
        {"id": "e1", "source": "start", "target": "m"}, {"id": "e2", "source": "m", "target": "v"},
        {"id": "e3", "source": "v", "target": "bye"}
    ]});
    let mut chat = Chat::new(&doc)
        .set("ticket", json!("T-9"))
        .set("voice_id", json!("778"));
    let sends = chat.start().await;
    assert_eq!(bodies(&sends), ["Your ticket:", "", "Bye"]);
    assert_eq!(
        sends[1],
        Outgoing::Media {
            media: MediaType::Audio,
            link: None,
            id: Some("778".into()),
            caption: None,
            filename: None
        }
    );
    let out = &chat.ctx.node_outputs["m"];
    assert_eq!(out["success"], false);
    assert_eq!(
        out["error"],
        "media: `{{ticket_url}}` uses variables that are not set: ticket_url"
    );

    let mut chat = Chat::new(&doc)
        .set("ticket", json!("T-9"))
        .set("ticket_url", json!("https://t.example/T-9.pdf"));
    let sends = chat.start().await;
    assert_eq!(
        sends[1],
        Outgoing::Media {
            media: MediaType::Document,
            link: Some("https://t.example/T-9.pdf".into()),
            id: None,
            caption: None,
            filename: Some("T-9.pdf".into())
        }
    );
    assert_eq!(
        bodies(&sends[2..]),
        ["Bye"],
        "an unknown voice id is not sent"
    );
}

#[test]
fn validate_names_the_node_of_every_bad_media_cta_and_location_field() {
    let doc = read_json(&fixture("bad-media.json"));
    let errors = match compile_json(&doc) {
        Ok(_) => panic!("bad-media.json compiled"),
        Err(errors) => errors,
    };
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let expected = [
        "node `no-kind` (No kind): required field `media.type` is missing or empty",
        "node `gif` (Gif): field `media.type`: `gif` is not image, video, audio, document or sticker",
        "node `both` (Both): field `media`: give `link` or `id`, not both",
        "node `neither` (Neither): field `media`: needs `link` (a public http(s) URL) or `id`",
        "node `voice` (Voice): field `media.caption`: WhatsApp takes no caption with audio",
        "node `named` (Named): field `media.filename`: only a document has a file name, not image",
        "node `ftp` (Ftp): field `media.link`: `ftp://x.example/a.pdf` is not an http(s) URL",
        "node `cta` (Cta): required field `ctaUrl.buttonText` is missing or empty",
        "node `long` (Long): field `ctaUrl.buttonText`: longer than 20 characters",
        "node `long` (Long): field `ctaUrl.url`: `javascript:alert(1)` is not an http(s) URL",
        "node `two` (Two): field `ctaUrl`: a message node sends `media` or `ctaUrl`, not both",
        "node `where` (Where): field `validation.type`: `selfie` is not email",
    ];
    for line in expected {
        assert!(
            text.iter().any(|t| t.starts_with(line)),
            "missing `{line}` in {text:#?}"
        );
    }
    assert_eq!(text.len(), expected.len(), "{text:#?}");
    // The good sample compiles without a warning.
    let (_, warnings) = compile_json(&read_json(&fixture("claims-desk.json"))).expect("compiles");
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[tokio::test]
async fn an_unreadable_message_at_a_choice_question_is_asked_again_even_with_a_default_edge() {
    // A poll or a view-once photo is no choice: never stored, not sent by `default`.
    let poll = Inbound::Other {
        type_name: "unsupported.poll".into(),
    };
    let mut chat = started(&buttons_question(true, false)).await;
    let sends = send(&mut chat, poll.clone()).await;
    assert_eq!(bodies(&sends)[0], "Please tap a button.");
    assert!(matches!(&sends[1], Outgoing::Buttons { .. }), "{sends:?}");
    assert_eq!(chat.ctx.status, ContextStatus::WaitingInput);
    assert_eq!(chat.var("question_1.response"), None);
    assert_eq!(output(&chat)["error"], reason::UNSUPPORTED_MESSAGE);
    assert_eq!(output(&chat)["messageType"], "unsupported");
    assert_eq!(
        output(&chat)["userResponse"],
        json!({"type": "unsupported.poll"})
    );
    assert_eq!(bodies(&chat.click("a").await), ["Picked A"]);

    // Without `invalidChoiceMessage` the default text says why; past the limit the
    // conversation ends with the reason, and the last output keeps the kind.
    let mut chat = started(&list_question(true)).await;
    let sends = send(&mut chat, poll.clone()).await;
    assert_eq!(
        bodies(&sends)[0],
        wabot::engine::question::UNSUPPORTED_CHOICE_PROMPT
    );
    assert!(matches!(&sends[1], Outgoing::List { .. }), "{sends:?}");
    send(&mut chat, poll.clone()).await;
    let sends = send(&mut chat, poll).await;
    assert!(sends.is_empty(), "{sends:?}");
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::UNSUPPORTED_MESSAGE)
    );
    assert_eq!(output(&chat)["messageType"], "unsupported");
    assert_eq!(output(&chat)["error"], reason::UNSUPPORTED_MESSAGE);
}

#[tokio::test]
async fn the_last_refusal_keeps_the_message_type_and_every_question_can_leave_by_exhausted() {
    // A photo question given a location past its retries: `exhausted`, and the
    // output still says what came.
    let photo = bot(
        json!({"questionType": "text", "content": "Photo?",
               "validation": {"type": "image", "maxRetries": 0}}),
        false,
        true,
    );
    let mut chat = started(&photo).await;
    assert_eq!(
        bodies(&send(&mut chat, location()).await),
        ["Let us call you."]
    );
    assert_eq!(output(&chat)["messageType"], "location");
    assert_eq!(output(&chat)["error"], "validation_exhausted");

    // A text question without validation: `exhausted` is one of its handles (no
    // warning) and unreadable messages past the retries leave by it.
    let plain = bot(
        json!({"questionType": "text", "content": "Tell us"}),
        false,
        true,
    );
    let (_, warnings) = compile_json(&plain).expect("compiles");
    assert!(warnings.iter().all(|w| w.node.id != "q"), "{warnings:?}");
    let mut chat = started(&plain).await;
    send(&mut chat, unsupported()).await;
    send(&mut chat, unsupported()).await;
    assert_eq!(
        bodies(&send(&mut chat, unsupported()).await),
        ["Let us call you."]
    );
    assert_eq!(output(&chat)["messageType"], "unsupported");
    assert_eq!(output(&chat)["error"], reason::UNSUPPORTED_MESSAGE);
}

#[tokio::test]
async fn a_tap_on_an_old_button_is_not_the_photo_a_text_question_asks_for() {
    let mut chat = started(&text_question(Some(
        json!({"type": "image", "errorMessage": "A photo, please."}),
    )))
    .await;
    let sends = chat.click("old-button").await;
    assert_eq!(bodies(&sends), ["A photo, please."]);
    assert_eq!(chat.ctx.status, ContextStatus::WaitingInput);
    assert_eq!(chat.var("question_1.response"), None);
    // At a location question too.
    let mut chat = started(&location_question(true)).await;
    let sends = chat.click("old-button").await;
    assert_eq!(bodies(&sends)[0], "Please share a location.");
    assert_eq!(chat.var("question_1.response"), None);
}

#[tokio::test]
async fn an_unreadable_message_at_a_location_question_ends_with_unsupported_message() {
    let mut chat = started(&location_question(false)).await;
    for _ in 0..2 {
        let sends = send(&mut chat, unsupported()).await;
        assert_eq!(bodies(&sends)[0], "Please share a location.");
    }
    send(&mut chat, unsupported()).await;
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::UNSUPPORTED_MESSAGE)
    );
}

/// start → a text question (legacy `variable: said`) → a message with the answer
/// inserted whole and by path → a condition on it → a rest_api call echoing it.
fn readable_bot(api_base: &str) -> Value {
    json!({"name": "Readable", "nodes": [
        {"id": "start", "type": "start", "data": {"type": "start"}},
        {"id": "q", "type": "question", "data": {"type": "question", "label": "Q",
            "questionType": "text", "content": "Send something", "variable": "said"}},
        {"id": "show", "type": "message", "data": {"type": "message", "label": "Show",
            "content": "You sent: {{question_1.response}} / {{said}} / {{question_1.response.type}}"}},
        {"id": "is_dent", "type": "condition", "data": {"type": "condition", "label": "Dent?",
            "conditionGroup": {"logicalOperator": "AND", "conditions": [
                {"id": "c1", "variable": "question_1.response", "operator": "==", "value": "the dent"}]}}},
        {"id": "yes", "type": "message", "data": {"type": "message", "label": "Yes", "content": "a dent"}},
        {"id": "no", "type": "message", "data": {"type": "message", "label": "No", "content": "no dent"}},
        {"id": "api", "type": "rest_api", "data": {"type": "rest_api", "label": "Api",
            "apiUrl": format!("{api_base}/echo"), "apiMethod": "POST",
            "apiBody": "{\"said\": \"{{question_1.response}}\"}", "apiResponsePath": "received"}},
        {"id": "echoed", "type": "message", "data": {"type": "message", "label": "Echoed",
            "content": "api: {{rest_api_1.data.said}}"}}
    ], "edges": [
        {"id": "e1", "source": "start", "target": "q"}, {"id": "e2", "source": "q", "target": "show"},
        {"id": "e3", "source": "show", "target": "is_dent"},
        {"id": "e4", "source": "is_dent", "target": "yes", "sourceHandle": "true"},
        {"id": "e5", "source": "is_dent", "target": "no", "sourceHandle": "false"},
        {"id": "e6", "source": "yes", "target": "api"}, {"id": "e7", "source": "no", "target": "api"},
        {"id": "e8", "source": "api", "target": "echoed", "sourceHandle": "success"}
    ]})
}

#[tokio::test]
async fn answers_inserted_whole_read_as_text_in_messages_conditions_and_rest_bodies() {
    let api = crate::engine::spawn_orders_api().await;
    let doc = readable_bot(&api);
    let cases: [(Inbound, &str, &str); 6] = [
        (
            image(Some("the dent")),
            "You sent: the dent / the dent / image",
            "a dent",
        ),
        (
            media(AnswerKind::Document, None),
            "You sent: [document] / [document] / document",
            "no dent",
        ),
        (
            location(),
            "You sent: Sultanahmet, Fatih, İstanbul / Sultanahmet, Fatih, İstanbul / {{question_1.response.type}}",
            "no dent",
        ),
        (
            Inbound::Location {
                latitude: Some(41.0082),
                longitude: Some(28.9784),
                name: None,
                address: None,
            },
            "You sent: 41.0082, 28.9784 / 41.0082, 28.9784 / {{question_1.response.type}}",
            "no dent",
        ),
        (
            contacts(),
            "You sent: Ali Veli / Ali Veli / {{question_1.response.type}}",
            "no dent",
        ),
        (
            Inbound::Contacts {
                contacts: json!([{"name": {"formatted_name": "Ali Veli"}},
                                 {"name": {"formatted_name": "Ayşe Kaya"}, "phones": []}]),
            },
            "You sent: Ali Veli, Ayşe Kaya / Ali Veli, Ayşe Kaya / {{question_1.response.type}}",
            "no dent",
        ),
    ];
    for (inbound, shown, dent) in cases {
        let mut chat = started(&doc).await;
        let sends = send(&mut chat, inbound.clone()).await;
        let said = shown
            .strip_prefix("You sent: ")
            .and_then(|s| s.split(" / ").next())
            .unwrap();
        assert_eq!(
            bodies(&sends),
            [shown.to_owned(), dent.to_owned(), format!("api: {said}")],
            "{inbound:?}"
        );
    }
    // Paths still read the structured value.
    let mut chat = started(&doc).await;
    send(&mut chat, location()).await;
    assert_eq!(
        chat.var("question_1.response.latitude"),
        Some(json!(41.0082))
    );
}

#[tokio::test]
async fn a_message_while_a_flow_waits_is_answered_with_the_flow_again() {
    let doc = read_json(&fixture("flow-desk.json"));
    let mut chat = Chat::new(&doc);
    chat.start().await;
    chat.click("btn_price").await;
    assert_eq!(chat.ctx.status, ContextStatus::WaitingFlow);
    let deadline = chat.deadline;
    let waiting = chat.ctx.current_node_id.clone();
    for inbound in [
        Inbound::Text {
            body: "hello?".into(),
        },
        image(None),
    ] {
        let sends = send(&mut chat, inbound.clone()).await;
        assert_eq!(
            bodies(&sends)[0],
            wabot::engine::exec::FLOW_PENDING_PROMPT,
            "{inbound:?}"
        );
        assert!(matches!(sends[1], Outgoing::Flow { .. }), "{sends:?}");
        assert_eq!(sends.len(), 2);
        assert_eq!(chat.ctx.status, ContextStatus::WaitingFlow);
        assert_eq!(chat.deadline, deadline, "the wait is unchanged");
        let out = &chat.ctx.node_outputs[&waiting];
        assert_eq!(out["error"], reason::FLOW_PENDING, "{out}");
    }
    assert_eq!(
        chat.ctx.node_outputs[&waiting]["userResponse"]["media_id"],
        "image-1"
    );
    // A skip word still leaves.
    let sends = chat.say("skip").await;
    assert_eq!(bodies(&sends)[0], "Done: your changes are saved.");
}

#[tokio::test]
async fn a_link_with_a_variable_that_is_not_set_is_refused_and_a_refused_cta_still_says_its_text() {
    // The docs' own example (docs/chatbot-fields.md).
    let doc = json!({"name": "L", "nodes": [
        {"id": "start", "type": "start", "data": {"type": "start"}},
        {"id": "form", "type": "message", "data": {"type": "message", "label": "Claim form",
            "content": "Here is your form.",
            "media": {"type": "document", "link": "https://cdn.example/forms/{{claim_id}}.pdf",
                      "caption": "Sign and send it back", "filename": "claim-{{claim_id}}.pdf"}}},
        {"id": "track", "type": "message", "data": {"type": "message", "label": "Track",
            "ctaUrl": {"text": "Follow your claim online.", "buttonText": "Track claim",
                       "url": "https://claims.example/track/{{claim_id}}", "footer": "Harbour"}}}
    ], "edges": [
        {"id": "e1", "source": "start", "target": "form"},
        {"id": "e2", "source": "form", "target": "track"}
    ]});
    let mut chat = Chat::new(&doc);
    let sends = chat.start().await;
    assert_eq!(
        sends,
        [
            Outgoing::Text {
                body: "Here is your form.".into()
            },
            Outgoing::Text {
                body: "Follow your claim online.".into()
            }
        ]
    );
    assert_eq!(
        chat.ctx.node_outputs["form"]["error"],
        "media: `https://cdn.example/forms/{{claim_id}}.pdf` uses variables that are not set: claim_id"
    );
    assert_eq!(
        chat.ctx.node_outputs["track"]["error"],
        "ctaUrl.url: `https://claims.example/track/{{claim_id}}` uses variables that are not set: claim_id"
    );
    // A null counts as not set.
    let mut chat = Chat::new(&doc).set("claim_id", Value::Null);
    assert_eq!(chat.start().await.len(), 2);

    let mut chat = Chat::new(&doc).set("claim_id", json!("C-7"));
    let sends = chat.start().await;
    assert_eq!(
        sends[1],
        Outgoing::Media {
            media: MediaType::Document,
            link: Some("https://cdn.example/forms/C-7.pdf".into()),
            id: None,
            caption: Some("Sign and send it back".into()),
            filename: Some("claim-C-7.pdf".into()),
        }
    );
    assert!(
        matches!(&sends[2], Outgoing::CtaUrl { url, .. } if url == "https://claims.example/track/C-7")
    );
}

#[test]
fn validation_kinds_where_they_mean_nothing_are_errors_and_location_questions_warn_without_exhausted(
) {
    let errors = |doc: &Value| -> Vec<String> {
        match compile_json(doc) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    };
    let mut buttons = buttons_question(true, false);
    buttons["nodes"][1]["data"]["validation"] = json!({"type": "image"});
    assert_eq!(
        errors(&buttons),
        [
            "node `q` (Q): field `validation.type`: `image` asks for a kind of message; a buttons \
          or list question takes its choices, and other kinds follow `default` like typed text"
        ]
    );
    let mut list = list_question(true);
    list["nodes"][1]["data"]["validation"] = json!({"type": "location"});
    assert_eq!(errors(&list).len(), 1, "{:?}", errors(&list));

    for kind in ["image", "email", "media", "text"] {
        let mut doc = location_question(true);
        doc["nodes"][1]["data"]["validation"] = json!({"type": kind});
        assert_eq!(
            errors(&doc),
            [format!(
                "node `q` (Q): field `validation.type`: `{kind}`: a location question takes a \
                 location; give `location` or no `validation.type`"
            )]
        );
    }
    let mut doc = location_question(true);
    doc["nodes"][1]["data"]["validation"] = json!({"type": "location", "maxRetries": 1});
    assert!(errors(&doc).is_empty());
    let mut doc = location_question(true);
    doc["nodes"][1]["data"]["validation"] = json!({"errorMessage": "Tap Send location."});
    assert!(errors(&doc).is_empty());

    // WhatsApp Web and Desktop cannot share a location: a location question needs
    // `exhausted`.
    // (`picked` and `gave_up` of the test graph are unreachable here.)
    let about_q = |doc: &Value| -> Vec<String> {
        let (_, warnings) = compile_json(doc).expect("compiles");
        warnings
            .iter()
            .filter(|w| w.node.id == "q")
            .map(ToString::to_string)
            .collect()
    };
    let text = about_q(&location_question(false));
    assert_eq!(
        text,
        [
            "node `q` (Q): a location question without an `exhausted` edge: WhatsApp Web and \
          Desktop cannot share a location, so a customer there is asked again 2 times, then \
          the conversation ends (validation_failed)"
        ]
    );
    assert!(about_q(&location_question(true)).is_empty());
}
