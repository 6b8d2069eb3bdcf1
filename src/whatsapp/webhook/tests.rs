use serde_json::{json, Value};

use super::*;

/// A one-message `messages` webhook around `message`.
fn envelope_with(message: Value) -> Envelope {
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
            "messages": [message]
        }}]}]
    });
    Envelope::parse(body.to_string().as_bytes()).expect("an object parses")
}

fn only_message(message: Value) -> Message {
    let envelope = envelope_with(message);
    let value = envelope
        .messages_values()
        .next()
        .expect("a messages change");
    assert_eq!(value.messages.len(), 1);
    value.messages[0].clone()
}

fn message(kind: &str, body: Value) -> Message {
    let mut m =
        json!({"from": "16505551234", "id": "wamid.X", "timestamp": "1750000000", "type": kind});
    m[kind] = body;
    only_message(m)
}

#[test]
fn a_text_message_reads_its_common_fields_and_body() {
    let m = message("text", json!({"body": "Hello"}));
    assert_eq!(m.from.as_deref(), Some("16505551234"));
    assert_eq!(m.id.as_deref(), Some("wamid.X"));
    assert_eq!(m.timestamp, Some(1_750_000_000));
    assert_eq!(m.type_name, "text");
    assert_eq!(
        m.kind,
        MessageKind::Text(Text {
            body: Some("Hello".into())
        })
    );
    assert_eq!(m.kind.db_type(), "text");
    assert_eq!(m.raw["text"]["body"], "Hello");
}

#[test]
fn every_media_type_reads_its_media_fields() {
    let body = json!({"id": "MEDIA1", "mime_type": "image/jpeg", "sha256": "abc=", "caption": "Look",
                      "filename": "a.pdf", "voice": true, "animated": false});
    for kind in ["image", "video", "audio", "document", "sticker"] {
        let m = message(kind, body.clone());
        let media = match &m.kind {
            MessageKind::Image(x)
            | MessageKind::Video(x)
            | MessageKind::Audio(x)
            | MessageKind::Document(x)
            | MessageKind::Sticker(x) => x.clone(),
            other => panic!("{kind} parsed as {other:?}"),
        };
        assert_eq!(m.kind.db_type(), kind);
        assert_eq!(media.id.as_deref(), Some("MEDIA1"));
        assert_eq!(media.mime_type.as_deref(), Some("image/jpeg"));
        assert_eq!(media.sha256.as_deref(), Some("abc="));
        assert_eq!(media.caption.as_deref(), Some("Look"));
        assert_eq!(media.filename.as_deref(), Some("a.pdf"));
        assert_eq!(media.voice, Some(true));
        assert_eq!(media.animated, Some(false));
    }
}

#[test]
fn a_location_takes_numbers_or_numeric_strings_and_survives_placeholders() {
    let m = message(
        "location",
        json!({"latitude": 37.77, "longitude": "-122.41", "name": "Store"}),
    );
    let MessageKind::Location(l) = m.kind else {
        panic!("{:?}", m.kind)
    };
    assert_eq!(l.latitude, Some(37.77));
    assert_eq!(l.longitude, Some(-122.41));
    assert_eq!(l.name.as_deref(), Some("Store"));
    let m = message("location", json!({"latitude": "<LOCATION_LATITUDE>"}));
    let MessageKind::Location(l) = m.kind else {
        panic!("{:?}", m.kind)
    };
    assert_eq!(l.latitude, None);
}

#[test]
fn contacts_and_orders_are_typed() {
    let m = message(
        "contacts",
        json!([{"name": {"formatted_name": "Ann Lee", "first_name": "Ann"},
                "phones": [{"phone": "+1 555", "wa_id": "1555", "type": "HOME"}],
                "emails": [{"email": "a@b.c", "type": "WORK"}]}]),
    );
    let MessageKind::Contacts(cards) = m.kind else {
        panic!("{:?}", m.kind)
    };
    assert_eq!(
        cards[0].name.as_ref().unwrap().formatted_name.as_deref(),
        Some("Ann Lee")
    );
    assert_eq!(cards[0].phones[0].wa_id.as_deref(), Some("1555"));
    assert_eq!(cards[0].emails[0].email.as_deref(), Some("a@b.c"));

    let m = message(
        "order",
        json!({"catalog_id": "C1", "text": "please", "product_items": [
            {"product_retailer_id": "SKU", "quantity": "2", "item_price": 9.5, "currency": "USD"},
            {"product_retailer_id": "SKU2", "quantity": "number-of-item"}]}),
    );
    let MessageKind::Order(o) = m.kind else {
        panic!("{:?}", m.kind)
    };
    assert_eq!(o.catalog_id.as_deref(), Some("C1"));
    assert_eq!(o.product_items[0].quantity, Some(2));
    assert_eq!(o.product_items[0].item_price, Some(9.5));
    assert_eq!(o.product_items[1].quantity, None);
}

#[test]
fn interactive_replies_are_typed_and_a_missing_inner_object_is_handled() {
    let m = message(
        "interactive",
        json!({"type": "button_reply", "button_reply": {"id": "b1", "title": "Yes"}}),
    );
    assert_eq!(
        m.kind,
        MessageKind::Interactive(Interactive::ButtonReply(ButtonReply {
            id: Some("b1".into()),
            title: Some("Yes".into())
        }))
    );
    let m = message(
        "interactive",
        json!({"type": "list_reply", "list_reply": {"id": "r1", "title": "Row", "description": "D"}}),
    );
    let MessageKind::Interactive(Interactive::ListReply(l)) = m.kind else {
        panic!("{:?}", m.kind)
    };
    assert_eq!(
        (l.id.as_deref(), l.description.as_deref()),
        (Some("r1"), Some("D"))
    );

    let m = message(
        "interactive",
        json!({"type": "nfm_reply", "nfm_reply": {"name": "flow", "body": "Sent",
               "response_json": "{\"flow_token\": \"T-1\", \"size\": \"M\"}"}}),
    );
    let MessageKind::Interactive(Interactive::NfmReply(n)) = m.kind else {
        panic!("{:?}", m.kind)
    };
    assert_eq!(n.flow_token().as_deref(), Some("T-1"));
    assert_eq!(n.response().unwrap()["size"], "M");

    let m = only_message(json!({"from": "1", "id": "w", "timestamp": "1", "type": "interactive"}));
    assert_eq!(m.kind, MessageKind::Interactive(Interactive::Missing));
    assert_eq!(m.kind.db_type(), "interactive");
    let m = message("interactive", json!({"type": "button_reply"}));
    assert!(
        matches!(m.kind, MessageKind::Interactive(Interactive::Other { ref type_name, .. }) if type_name == "button_reply")
    );
}

#[test]
fn button_reaction_system_and_unsupported_are_typed() {
    let m = message("button", json!({"payload": "P", "text": "No"}));
    assert_eq!(
        m.kind,
        MessageKind::Button(Button {
            payload: Some("P".into()),
            text: Some("No".into())
        })
    );

    let m = message("reaction", json!({"message_id": "wamid.R", "emoji": "👍"}));
    let MessageKind::Reaction(r) = m.kind else {
        panic!()
    };
    assert_eq!(r.message_id.as_deref(), Some("wamid.R"));
    assert!(!r.removed());
    // Meta's Postman collection misspells the key; an empty emoji is a removal.
    let m = message("reaction", json!({"messsage_id": "wamid.R", "emoji": ""}));
    let MessageKind::Reaction(r) = m.kind else {
        panic!()
    };
    assert_eq!(r.message_id.as_deref(), Some("wamid.R"));
    assert!(r.removed());
    let m = message("reaction", json!({"message_id": "wamid.R"}));
    let MessageKind::Reaction(r) = m.kind else {
        panic!()
    };
    assert!(r.removed());

    let m = message(
        "system",
        json!({"body": "changed", "type": "user_changed_number", "new_wa_id": "2"}),
    );
    let MessageKind::System(s) = m.kind else {
        panic!()
    };
    assert_eq!(
        (s.kind.as_deref(), s.new_wa_id.as_deref()),
        (Some("user_changed_number"), Some("2"))
    );

    let m = only_message(
        json!({"from": "1", "id": "w", "timestamp": "1", "type": "unsupported",
        "unsupported": {"type": "edit"},
        "errors": [{"code": 131051, "title": "Message type unknown", "error_data": {"details": "nope"}}]}),
    );
    assert_eq!(
        m.kind,
        MessageKind::Unsupported(Unsupported {
            kind: Some("edit".into())
        })
    );
    assert_eq!(m.errors[0].code, Some(131051));
    assert_eq!(m.errors[0].details(), Some("nope"));
}

#[test]
fn unknown_types_and_malformed_bodies_are_kept_not_failed() {
    let m = only_message(
        json!({"from": "1", "id": "w", "timestamp": "<TIMESTAMP>", "type": "revoke",
                                "revoke": {"original_message_id": "x"}}),
    );
    assert_eq!(
        m.kind,
        MessageKind::Unknown {
            type_name: "revoke".into()
        }
    );
    assert_eq!(m.kind.db_type(), "unknown");
    assert_eq!(m.timestamp, None);
    assert_eq!(m.raw["revoke"]["original_message_id"], "x");
    // A known type whose body is not an object keeps its raw JSON.
    let m = message("text", json!("just a string"));
    assert_eq!(
        m.kind,
        MessageKind::Unknown {
            type_name: "text".into()
        }
    );
    // Without `type`, the body's key names it.
    let m = only_message(
        json!({"from": "1", "id": "w", "location": {"latitude": 1.5, "longitude": 2}}),
    );
    assert_eq!(m.kind.db_type(), "location");
}

#[test]
fn context_referral_and_identity_are_read() {
    let m = only_message(
        json!({"from": "1", "id": "w", "timestamp": "1", "type": "text", "text": {"body": "?"},
        "context": {"from": "155", "id": "wamid.P", "forwarded": true,
                    "referred_product": {"catalog_id": "C", "product_retailer_id": "P"}},
        "referral": {"source_url": "https://fb.me/x", "source_type": "ad", "ctwa_clid": "clid"}}),
    );
    let c = m.context.unwrap();
    assert_eq!(
        (c.id.as_deref(), c.forwarded),
        (Some("wamid.P"), Some(true))
    );
    assert_eq!(c.referred_product.unwrap().catalog_id.as_deref(), Some("C"));
    let r = m.referral.unwrap();
    assert_eq!(
        (r.source_type.as_deref(), r.ctwa_clid.as_deref()),
        (Some("ad"), Some("clid"))
    );
}

#[test]
fn statuses_errors_contacts_and_other_fields_are_read() {
    let body = json!({"object": "whatsapp_business_account", "entry": [
        {"id": "A", "changes": [
            {"field": "messages", "value": {
                "metadata": {"display_phone_number": "1555", "phone_number_id": 42},
                "statuses": [
                    {"id": "wamid.S", "status": "read", "timestamp": "1750", "recipient_id": "1650",
                     "conversation": {"id": "c", "expiration_timestamp": "1751", "origin": {"type": "service"}},
                     "pricing": {"billable": true, "pricing_model": "CBP", "category": "service"}},
                    {"id": "wamid.F", "status": "failed", "timestamp": "1750",
                     "errors": [{"code": 131047, "title": "Re-engagement message"}]},
                    {"id": "wamid.D", "status": "deleted"}],
                "errors": [{"code": 130429, "title": "Rate limit hit"}]}},
            {"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}}]},
        {"id": "B", "changes": [{"field": "message_template_status_update", "value": {"event": "APPROVED"}}]}]});
    let e = Envelope::from_value(&body).unwrap();
    assert_eq!(
        e.fields(),
        [
            "messages",
            "account_update",
            "message_template_status_update"
        ]
    );
    let v = e.messages_values().next().unwrap();
    assert_eq!(v.metadata.phone_number_id.as_deref(), Some("42"));
    assert_eq!(v.statuses[0].status, StatusKind::Read);
    assert_eq!(
        v.statuses[0]
            .conversation
            .as_ref()
            .unwrap()
            .expiration_timestamp,
        Some(1751)
    );
    assert_eq!(v.statuses[0].pricing.as_ref().unwrap().billable, Some(true));
    assert_eq!(v.statuses[1].status, StatusKind::Failed);
    assert_eq!(v.statuses[1].errors[0].code, Some(131047));
    assert_eq!(v.statuses[2].status, StatusKind::Other("deleted".into()));
    assert_eq!(v.statuses[2].status.db_status(), None);
    assert_eq!(v.errors[0].code, Some(130429));
    assert_eq!(
        e.entry[0].changes[1].value,
        ChangeValue::Other(json!({"event": "VERIFIED_ACCOUNT"}))
    );
    assert_eq!(
        e.entry[1].changes[0].field,
        "message_template_status_update"
    );
}

#[test]
fn the_profile_name_is_matched_by_wa_id() {
    let e = envelope_with(
        json!({"from": "16505551234", "id": "w", "type": "text", "text": {"body": "x"}}),
    );
    let v = e.messages_values().next().unwrap();
    assert_eq!(v.profile_name("16505551234"), Some("Sheena Nelson"));
    assert_eq!(v.profile_name("999"), None);
}

#[test]
fn only_a_json_object_is_a_webhook() {
    assert!(matches!(
        Envelope::parse(b"not json"),
        Err(ParseError::NotJson(_))
    ));
    assert!(matches!(
        Envelope::parse(b"[1, 2]"),
        Err(ParseError::NotAnObject)
    ));
    let e = Envelope::parse(b"{}").unwrap();
    assert_eq!((e.object, e.entry.len()), (None, 0));
    // Entries and changes of the wrong shape are passed over, not fatal.
    let e = Envelope::parse(
        br#"{"entry": [1, {"changes": ["x", {"field": "messages", "value": 3}]}]}"#,
    )
    .unwrap();
    assert_eq!(e.entry.len(), 1);
    assert_eq!(e.entry[0].changes[0].value, ChangeValue::Other(json!(3)));
}

/// What a webhook holds once parsed: message types in order, status names, error codes.
type Summary = (Vec<String>, Vec<String>, Vec<i64>);

/// The [`Summary`] of an envelope.
fn summary(envelope: &Envelope) -> Summary {
    let mut types = Vec::new();
    let mut statuses = Vec::new();
    let mut errors = Vec::new();
    for value in envelope.messages_values() {
        types.extend(value.messages.iter().map(|m| m.kind.db_type().to_owned()));
        statuses.extend(value.statuses.iter().map(|s| s.status.as_str().to_owned()));
        errors.extend(value.errors.iter().filter_map(|e| e.code));
    }
    (types, statuses, errors)
}

#[test]
fn every_fixture_payload_parses_to_its_kind() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/webhooks");
    let read = |name: &str| {
        let bytes = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        Envelope::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let one = |kind: &str| (vec![kind.to_owned()], vec![], vec![]);
    let status = |s: &str| (vec![], vec![s.to_owned()], vec![]);
    let expected: Vec<(&str, Summary)> = vec![
        ("text.json", one("text")),
        ("text_reply_with_context.json", one("text")),
        ("interactive_button_reply.json", one("interactive")),
        ("interactive_list_reply.json", one("interactive")),
        ("interactive_nfm_reply.json", one("interactive")),
        ("button.json", one("button")),
        ("image.json", one("image")),
        ("video.json", one("video")),
        ("audio.json", one("audio")),
        ("document.json", one("document")),
        ("sticker.json", one("sticker")),
        ("location.json", one("location")),
        ("contacts.json", one("contacts")),
        ("reaction.json", one("reaction")),
        ("reaction_removed.json", one("reaction")),
        ("unsupported.json", one("unsupported")),
        ("status_sent.json", status("sent")),
        ("status_delivered.json", status("delivered")),
        ("status_read.json", status("read")),
        ("status_failed.json", status("failed")),
        ("errors.json", (vec![], vec![], vec![131000])),
        ("batch.json", (vec!["text".into(); 3], vec![], vec![])),
        ("other_field.json", (vec![], vec![], vec![])),
        // An echo is no inbound message (checked below).
        ("smb_message_echoes.json", (vec![], vec![], vec![])),
        // A username customer: by BSUID alone, then with their number.
        ("text_username_only.json", one("text")),
        ("text_with_bsuid.json", one("text")),
        ("status_delivered_bsuid.json", status("delivered")),
    ];
    for (name, want) in &expected {
        assert_eq!(&summary(&read(name)), want, "{name}");
    }
    // Every fixture is in the table above.
    let files = std::fs::read_dir(&dir)
        .expect("fixtures/webhooks")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))
        })
        .count();
    assert_eq!(files, expected.len());

    // The interactive kinds, as the engine will read them.
    let reply = |name: &str| {
        read(name)
            .messages_values()
            .next()
            .expect("messages")
            .messages[0]
            .kind
            .clone()
    };
    assert!(matches!(
        reply("interactive_button_reply.json"),
        MessageKind::Interactive(Interactive::ButtonReply(b)) if b.id.as_deref() == Some("btn_prices")
    ));
    assert!(matches!(
        reply("interactive_list_reply.json"),
        MessageKind::Interactive(Interactive::ListReply(l)) if l.id.as_deref() == Some("row_express")
    ));
    let MessageKind::Interactive(Interactive::NfmReply(nfm)) = reply("interactive_nfm_reply.json")
    else {
        panic!("not an nfm_reply");
    };
    assert_eq!(
        nfm.flow_token().as_deref(),
        Some("00000000-0000-4000-8000-000000000001:booking_form")
    );
    let other = read("other_field.json");
    assert_eq!(other.fields(), ["account_update"]);

    let echoes = read("smb_message_echoes.json");
    assert_eq!(echoes.fields(), ["smb_message_echoes"]);
    let value = echoes.messages_values().next().expect("an echoes value");
    assert_eq!(
        value.metadata.phone_number_id.as_deref(),
        Some("106540352242922")
    );
    let echo = &value.message_echoes[0];
    assert_eq!(echo.id.as_deref(), Some("wamid.FIXTURE.ECHO"));
    assert_eq!(echo.recipient_wa_id().as_deref(), Some("905320000001"));
    assert!(matches!(&echo.kind, MessageKind::Text(t) if t.body.is_some()));
}

#[test]
fn an_echo_change_reads_the_business_s_messages_with_their_recipient() {
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
    {"field": "smb_message_echoes", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "message_echoes": [
            {"from": "15550783881", "to": "+1 (650) 555-1234", "id": "wamid.E1",
             "timestamp": 1739321024, "type": "text", "text": {"body": "On my way"}},
            {"from": "15550783881", "to": "16505551234", "id": "wamid.E2", "timestamp": "1739321030",
             "type": "image", "image": {"id": "MEDIA", "mime_type": "image/jpeg", "caption": "Here"}},
            {"from": "15550783881", "to": "16505551234", "id": "wamid.E3", "type": "edit",
             "edit": {"original_message_id": "wamid.E1", "message": {"type": "text", "text": {"body": "Soon"}}}}
        ]}}]}]});
    let e = Envelope::from_value(&body).unwrap();
    assert_eq!(e.fields(), ["smb_message_echoes"]);
    let v = e.messages_values().next().expect("echoes are typed");
    assert!(v.messages.is_empty() && v.statuses.is_empty());
    assert_eq!(v.message_echoes.len(), 3);
    let first = &v.message_echoes[0];
    assert_eq!(first.from.as_deref(), Some("15550783881"));
    assert_eq!(first.to.as_deref(), Some("+1 (650) 555-1234"));
    assert_eq!(first.recipient_wa_id().as_deref(), Some("16505551234"));
    assert_eq!(first.timestamp, Some(1_739_321_024));
    assert_eq!(
        first.kind,
        MessageKind::Text(Text {
            body: Some("On my way".into())
        })
    );
    assert_eq!(v.message_echoes[1].kind.db_type(), "image");
    assert_eq!(
        v.message_echoes[2].kind,
        MessageKind::Unknown {
            type_name: "edit".into()
        }
    );
    // An inbound message has no recipient; a business-scoped id is kept whole.
    let inbound = message("text", json!({"body": "x"}));
    assert_eq!(
        (inbound.to.clone(), inbound.recipient_wa_id()),
        (None, None)
    );
    let bsuid = only_message(json!({"from": "1", "to": "US.13491208655302741918", "id": "w"}));
    assert_eq!(
        bsuid.recipient_wa_id().as_deref(),
        Some("US.13491208655302741918")
    );
    let blank = only_message(json!({"from": "1", "to": "  ", "id": "w"}));
    assert_eq!(blank.recipient_wa_id(), None);
}

#[test]
fn every_shared_sample_parses() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    let mut parsed = 0;
    for dir in [
        "whatsapp/samples/meta-docs",
        "whatsapp/samples/meta-postman/webhooks",
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json")
                || (dir.ends_with("meta-docs") && !name.starts_with("webhook_"))
            {
                continue;
            }
            let bytes = std::fs::read(entry.path()).unwrap();
            Envelope::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            parsed += 1;
        }
    }
    // Only when the reference material is beside the checkout; the fixtures above
    // stand for it otherwise.
    if root.exists() {
        assert!(parsed >= 20, "only {parsed} samples found");
    }
}

#[test]
fn a_username_customer_reads_their_bsuid_parent_and_username_without_a_phone() {
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
            "metadata": {"phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Mert", "username": "mert.bakes"},
                          "user_id": "US.13491208655302741918",
                          "parent_user_id": "US.ENT.11815799212886844830"}],
            "messages": [{"from_user_id": "US.13491208655302741918",
                          "from_parent_user_id": "US.ENT.11815799212886844830",
                          "id": "wamid.U", "type": "text", "text": {"body": "hi"}}],
            "statuses": [{"id": "wamid.O", "status": "read",
                          "recipient_user_id": "US.13491208655302741918"}]
        }}]}]
    });
    let envelope = Envelope::from_value(&body).unwrap();
    let value = envelope.messages_values().next().unwrap();
    let m = &value.messages[0];
    assert_eq!(m.from, None);
    assert_eq!(m.from_user_id.as_deref(), Some("US.13491208655302741918"));
    assert_eq!(
        m.from_parent_user_id.as_deref(),
        Some("US.ENT.11815799212886844830")
    );
    let contact = value.contact_of(m).expect("the contact by BSUID");
    assert_eq!(
        (contact.name(), contact.username(), contact.wa_id.as_deref()),
        (Some("Mert"), Some("mert.bakes"), None)
    );
    assert_eq!(
        contact.parent_user_id.as_deref(),
        Some("US.ENT.11815799212886844830")
    );
    let status = &value.statuses[0];
    assert_eq!(
        (
            status.recipient_id.as_deref(),
            status.recipient_user_id.as_deref()
        ),
        (None, Some("US.13491208655302741918"))
    );
}

#[test]
fn a_contact_is_found_by_wa_id_or_bsuid_and_a_lone_one_for_an_anonymous_message() {
    let body = json!({"object": "whatsapp_business_account", "entry": [{"changes": [
        {"field": "messages", "value": {
            "contacts": [{"wa_id": "1", "user_id": "US.1", "profile": {"name": "A"}},
                         {"user_id": "US.2", "profile": {"name": "B"}}],
            "messages": [{"from": "1", "id": "a", "type": "text"},
                         {"from_user_id": "US.2", "id": "b", "type": "text"},
                         {"id": "c", "type": "text"}]}}]}]});
    let envelope = Envelope::from_value(&body).unwrap();
    let value = envelope.messages_values().next().unwrap();
    let names: Vec<Option<&str>> = value
        .messages
        .iter()
        .map(|m| value.contact_of(m).and_then(Contact::name))
        .collect();
    // Two contacts: a message naming neither takes none of them.
    assert_eq!(names, [Some("A"), Some("B"), None]);
}

#[test]
fn a_bsuid_has_a_country_code_a_dot_and_an_id() {
    for id in [
        "US.13491208655302741918",
        "US.ENT.11815799212886844830",
        "TR.1",
    ] {
        assert!(is_bsuid(id), "{id}");
    }
    for id in [
        "",
        "905551112233",
        "+905551112233",
        "us.1",
        "US.",
        "US 1",
        "U.S.1",
        "US.1 2",
        &format!("US.{}", "1".repeat(62)),
    ] {
        assert!(!is_bsuid(id), "{id}");
    }
}

#[test]
fn an_echo_to_a_bsuid_names_it_as_its_recipient_user_id() {
    let echo =
        Message::from_value(&json!({"from": "15550783881", "to": "US.1", "id": "e"})).unwrap();
    assert_eq!(echo.recipient_user_id().as_deref(), Some("US.1"));
    let echo =
        Message::from_value(&json!({"from": "15550783881", "to": "+1 650-555-1234", "id": "e"}))
            .unwrap();
    assert_eq!(echo.recipient_user_id(), None);
    assert_eq!(echo.recipient_wa_id().as_deref(), Some("16505551234"));
}
