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
    for inbound in [image(None), location(), contacts(), unsupported()] {
        let mut chat = started(&buttons_question(true, false)).await;
        let sends = send(&mut chat, inbound.clone()).await;
        assert_eq!(bodies(&sends).len(), 1, "{inbound:?}: {sends:?}");
        assert!(bodies(&sends)[0].starts_with("Got it:"), "{sends:?}");
        assert_eq!(chat.ctx.status, ContextStatus::Completed);
        assert!(chat.var("question_1.response").is_some());
    }
    let mut chat = started(&buttons_question(true, false)).await;
    send(&mut chat, unsupported()).await;
    assert_eq!(output(&chat)["reason"], reason::UNSUPPORTED_MESSAGE);
    assert_eq!(output(&chat)["messageType"], "unsupported");

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
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("`{{ticket_url}}` is not an http(s) URL"),
        "{out}"
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
