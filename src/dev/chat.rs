//! A customer in a terminal: each line they type becomes the webhook Meta would post
//! for it, and each Graph API call the bot makes is drawn as a person would see it on
//! their phone. Pure: no I/O, so `wabot try` and its tests share every rule.
//!
//! What a line becomes:
//! * a number or a choice's title, while the bot's last message offers choices
//!   (reply buttons or list rows): that choice, as a `button_reply` / `list_reply`
//!   quoting the message it answers, the way WhatsApp sends a tap;
//! * `/text TEXT`: text, even when it matches a choice;
//! * `/location LAT LNG [NAME]`, `/image [CAPTION]`, `/document [FILENAME]`,
//!   `/voice`: a location or a media message (the media ids are made up: nothing can
//!   download them);
//! * `/flow JSON`: the answer to the last Flow the bot sent (an `nfm_reply` carrying
//!   its flow token);
//! * anything else: text.

use serde_json::{json, Map, Value};

use super::fake_graph::Reply;

/// Who the customer is and which business number they write to.
#[derive(Debug, Clone)]
pub struct Customer {
    /// Their phone number (`wa_id`).
    pub phone: String,
    /// Their WhatsApp profile name.
    pub name: String,
    /// The business's phone number id (`WABOT_PHONE_NUMBER_ID`).
    pub phone_number_id: String,
    /// The business's display number, quoted in replies' `context.from`.
    pub display_phone_number: String,
}

/// One choice the bot's last message offered.
#[derive(Debug, Clone, PartialEq)]
struct Choice {
    id: String,
    title: String,
    description: Option<String>,
    /// A list row (answered with `list_reply`) rather than a reply button.
    row: bool,
}

/// What a typed line asks for.
#[derive(Debug, PartialEq)]
pub enum Typed {
    /// Post this webhook body; `said` is what the customer said, in words.
    Send {
        webhook: Vec<u8>,
        said: String,
    },
    Help,
    Quit,
    /// Nothing to send: blank, or a command used wrongly (the reason).
    Nothing(Option<String>),
}

/// The terminal chat's state: which choices and which Flow are on screen.
#[derive(Debug)]
pub struct Chat {
    customer: Customer,
    /// Prefix of the wamids of the customer's messages (unique per run).
    run: String,
    sent: u64,
    choices: Vec<Choice>,
    /// The wamid of the message the choices belong to.
    choices_wamid: Option<String>,
    /// The last Flow: its wamid and flow token.
    flow: Option<(String, String)>,
}

pub const HELP: &str = "\
Type a message and press Enter. While the bot offers choices, a number or a choice's
title picks it. Commands:
  /text TEXT                  send TEXT as text, even if it names a choice
  /location LAT LNG [NAME]    share a location
  /image [CAPTION]            send a photo (also /document [FILENAME], /voice)
  /flow JSON                  submit the last Flow with these answers
  /help                       this text
  /quit                       end (so does Ctrl-D)";

impl Chat {
    pub fn new(customer: Customer, run: &str) -> Chat {
        Chat {
            customer,
            run: run.to_owned(),
            sent: 0,
            choices: Vec::new(),
            choices_wamid: None,
            flow: None,
        }
    }

    pub fn customer(&self) -> &Customer {
        &self.customer
    }

    /// Reads one line the customer typed.
    pub fn typed(&mut self, line: &str) -> Typed {
        let line = line.trim();
        if line.is_empty() {
            return Typed::Nothing(None);
        }
        let (command, rest) = match line.strip_prefix('/') {
            Some(command) => match command.split_once(char::is_whitespace) {
                Some((c, rest)) => (Some(c), rest.trim()),
                None => (Some(command), ""),
            },
            None => (None, line),
        };
        match command {
            None => match self.choice(line).cloned() {
                Some(choice) => self.pick(&choice),
                None => self.text(line),
            },
            Some("help") => Typed::Help,
            Some("quit") | Some("exit") => Typed::Quit,
            Some("text") if !rest.is_empty() => self.text(rest),
            Some("location") => self.location(rest),
            Some(kind @ ("image" | "document" | "voice")) => self.media(kind, rest),
            Some("flow") => self.flow_answer(rest),
            Some(other) => {
                Typed::Nothing(Some(format!("unknown command /{other}; /help lists them")))
            }
        }
    }

    /// Takes in a message the bot sent; the lines that draw it.
    pub fn bot_said(&mut self, reply: &Reply) -> Vec<String> {
        let body = &reply.body;
        let kind = body["type"].as_str().unwrap_or_default();
        match kind {
            "text" => said(body["text"]["body"].as_str().unwrap_or_default()),
            "interactive" => self.interactive(&reply.wamid, &body["interactive"]),
            "image" | "video" | "document" | "audio" | "sticker" => {
                let media = &body[kind];
                let mut head = format!("[{kind}]");
                for key in ["caption", "filename", "link", "id"] {
                    if let Some(v) = media[key].as_str() {
                        head.push(' ');
                        head.push_str(v);
                    }
                }
                said(&head)
            }
            "location" => {
                let l = &body["location"];
                said(&format!(
                    "[location] {} {} ({}, {})",
                    l["name"].as_str().unwrap_or_default(),
                    l["address"].as_str().unwrap_or_default(),
                    l["latitude"],
                    l["longitude"]
                ))
            }
            "template" => {
                let t = &body["template"];
                let mut lines = said(&format!(
                    "[template {} ({})]",
                    t["name"].as_str().unwrap_or_default(),
                    t["language"]["code"].as_str().unwrap_or_default()
                ));
                for component in t["components"].as_array().into_iter().flatten() {
                    let params: Vec<String> = component["parameters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| match p["text"].as_str() {
                            Some(text) => text.to_owned(),
                            None => p.to_string(),
                        })
                        .collect();
                    lines.push(format!(
                        "     {}: {}",
                        component["type"].as_str().unwrap_or("component"),
                        params.join(", ")
                    ));
                }
                lines
            }
            _ => said(&format!("[{kind}] {body}")),
        }
    }

    fn interactive(&mut self, wamid: &str, i: &Value) -> Vec<String> {
        let mut text = String::new();
        if let Some(header) = i["header"]["text"].as_str() {
            text.push_str(header);
            text.push('\n');
        }
        text.push_str(i["body"]["text"].as_str().unwrap_or_default());
        if let Some(footer) = i["footer"]["text"].as_str() {
            text.push('\n');
            text.push_str(footer);
        }
        let mut lines = said(&text);
        let action = &i["action"];
        match i["type"].as_str().unwrap_or_default() {
            "button" => {
                let choices: Vec<Choice> = action["buttons"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| Choice {
                        id: str_of(&b["reply"]["id"]),
                        title: str_of(&b["reply"]["title"]),
                        description: None,
                        row: false,
                    })
                    .collect();
                let row: Vec<String> = choices
                    .iter()
                    .enumerate()
                    .map(|(k, c)| format!("[{}] {}", k + 1, c.title))
                    .collect();
                lines.push(format!("     {}", row.join("   ")));
                self.offer(wamid, choices);
            }
            "list" => {
                lines.push(format!("     ({})", str_of(&action["button"])));
                let mut choices = Vec::new();
                for section in action["sections"].as_array().into_iter().flatten() {
                    if let Some(title) = section["title"].as_str() {
                        lines.push(format!("     {title}"));
                    }
                    for r in section["rows"].as_array().into_iter().flatten() {
                        let choice = Choice {
                            id: str_of(&r["id"]),
                            title: str_of(&r["title"]),
                            description: r["description"].as_str().map(str::to_owned),
                            row: true,
                        };
                        let mut line = format!("     [{}] {}", choices.len() + 1, choice.title);
                        if let Some(d) = &choice.description {
                            line.push_str(" - ");
                            line.push_str(d);
                        }
                        lines.push(line);
                        choices.push(choice);
                    }
                }
                self.offer(wamid, choices);
            }
            "flow" => {
                let p = &action["parameters"];
                lines.push(format!(
                    "     [{}] (a Flow; answer with /flow {{\"field\": \"value\"}})",
                    str_of(&p["flow_cta"])
                ));
                self.flow = Some((wamid.to_owned(), str_of(&p["flow_token"])));
            }
            "cta_url" => {
                let p = &action["parameters"];
                lines.push(format!(
                    "     [{}] {}",
                    str_of(&p["display_text"]),
                    str_of(&p["url"])
                ));
            }
            "location_request_message" => {
                lines.push("     [Send location] (answer with /location LAT LNG)".to_owned());
            }
            other => lines.push(format!("     ({other}: {action})")),
        }
        lines
    }

    fn offer(&mut self, wamid: &str, choices: Vec<Choice>) {
        self.choices = choices;
        self.choices_wamid = Some(wamid.to_owned());
    }

    /// The offered choice a line names: its number, or its title in any case.
    fn choice(&self, line: &str) -> Option<&Choice> {
        if let Ok(n) = line.parse::<usize>() {
            return n.checked_sub(1).and_then(|k| self.choices.get(k));
        }
        self.choices
            .iter()
            .find(|c| c.title.trim().to_lowercase() == line.to_lowercase())
    }

    fn pick(&mut self, choice: &Choice) -> Typed {
        let reply = if choice.row {
            let mut row = json!({"id": choice.id, "title": choice.title});
            if let Some(d) = &choice.description {
                row["description"] = json!(d);
            }
            json!({"type": "list_reply", "list_reply": row})
        } else {
            json!({"type": "button_reply",
                   "button_reply": {"id": choice.id, "title": choice.title}})
        };
        let context = self.choices_wamid.clone();
        let said = choice.title.clone();
        self.message("interactive", reply, context, said)
    }

    fn text(&mut self, text: &str) -> Typed {
        self.message("text", json!({"body": text}), None, text.to_owned())
    }

    fn location(&mut self, rest: &str) -> Typed {
        let mut parts = rest.split_whitespace();
        let (Some(lat), Some(lng)) = (
            parts
                .next()
                .and_then(|v| v.trim_end_matches(',').parse::<f64>().ok()),
            parts.next().and_then(|v| v.parse::<f64>().ok()),
        ) else {
            return Typed::Nothing(Some("usage: /location LAT LNG [NAME]".to_owned()));
        };
        let name: Vec<&str> = parts.collect();
        let mut location = json!({"latitude": lat, "longitude": lng});
        if !name.is_empty() {
            location["name"] = json!(name.join(" "));
        }
        self.message(
            "location",
            location,
            None,
            format!("(location {lat}, {lng})"),
        )
    }

    fn media(&mut self, kind: &str, rest: &str) -> Typed {
        let n = self.sent;
        let (kind, mut media) = match kind {
            "image" => ("image", json!({"mime_type": "image/jpeg"})),
            "document" => (
                "document",
                json!({"mime_type": "application/pdf",
                                               "filename": if rest.is_empty() { "document.pdf" } else { rest }}),
            ),
            _ => (
                "audio",
                json!({"mime_type": "audio/ogg; codecs=opus", "voice": true}),
            ),
        };
        media["id"] = json!(format!("{}{n:06}", 9_000_000_000u64));
        media["sha256"] = json!("bm90IGEgcmVhbCBkaWdlc3Q=");
        if kind == "image" && !rest.is_empty() {
            media["caption"] = json!(rest);
        }
        let said = if rest.is_empty() {
            format!("({kind})")
        } else {
            format!("({kind}) {rest}")
        };
        self.message(kind, media, None, said)
    }

    fn flow_answer(&mut self, rest: &str) -> Typed {
        let Some((wamid, token)) = self.flow.clone() else {
            return Typed::Nothing(Some("the bot has sent no Flow to answer".to_owned()));
        };
        let mut answers =
            match serde_json::from_str::<Value>(if rest.is_empty() { "{}" } else { rest }) {
                Ok(Value::Object(map)) => map,
                _ => {
                    return Typed::Nothing(Some(
                        "usage: /flow {\"field\": \"value\", ...} (a JSON object)".to_owned(),
                    ))
                }
            };
        answers.insert("flow_token".to_owned(), json!(token));
        let response = Value::Object(answers).to_string();
        let reply = json!({"type": "nfm_reply", "nfm_reply": {
            "name": "flow", "body": "Sent", "response_json": response}});
        self.message("interactive", reply, Some(wamid), format!("(Flow) {rest}"))
    }

    /// The webhook for one message of the customer's, stamped now.
    fn message(
        &mut self,
        kind: &str,
        content: Value,
        context: Option<String>,
        said: String,
    ) -> Typed {
        self.sent += 1;
        let c = &self.customer;
        let mut message = Map::new();
        message.insert("from".to_owned(), json!(c.phone));
        message.insert(
            "id".to_owned(),
            json!(format!("wamid.TRY.{}.{}", self.run, self.sent)),
        );
        message.insert("timestamp".to_owned(), json!(super::unix_now().to_string()));
        message.insert("type".to_owned(), json!(kind));
        message.insert(kind.to_owned(), content);
        if let Some(id) = context {
            message.insert(
                "context".to_owned(),
                json!({"from": c.display_phone_number, "id": id}),
            );
        }
        let webhook = json!({"object": "whatsapp_business_account", "entry": [{
            "id": "WABA-TRY", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": c.display_phone_number,
                             "phone_number_id": c.phone_number_id},
                "contacts": [{"profile": {"name": c.name}, "wa_id": c.phone}],
                "messages": [Value::Object(message)]}}]}]});
        Typed::Send {
            webhook: webhook.to_string().into_bytes(),
            said,
        }
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// `bot: ` before the first line, aligned continuation lines after it.
fn said(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(k, line)| {
            if k == 0 {
                format!("bot: {line}")
            } else {
                format!("     {line}")
            }
        })
        .collect();
    if lines.is_empty() {
        lines.push("bot:".to_owned());
    }
    lines
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn chat() -> Chat {
        Chat::new(
            Customer {
                phone: "15550001234".into(),
                name: "You".into(),
                phone_number_id: "100000000000001".into(),
                display_phone_number: "15550783881".into(),
            },
            "t",
        )
    }

    fn reply(body: Value) -> Reply {
        Reply {
            at: Instant::now(),
            wamid: "wamid.OUT.1".into(),
            to: "15550001234".into(),
            text: String::new(),
            body,
        }
    }

    fn webhook_message(typed: Typed) -> Value {
        let Typed::Send { webhook, .. } = typed else {
            panic!("expected a webhook, got {typed:?}");
        };
        let v: Value = serde_json::from_slice(&webhook).unwrap();
        v["entry"][0]["changes"][0]["value"]["messages"][0].clone()
    }

    #[test]
    fn text_is_a_text_message_from_the_customer_stamped_now() {
        let m = webhook_message(chat().typed("hi"));
        assert_eq!(m["type"], "text");
        assert_eq!(m["text"]["body"], "hi");
        assert_eq!(m["from"], "15550001234");
        let ts: u64 = m["timestamp"].as_str().unwrap().parse().unwrap();
        assert!(ts + 60 > crate::dev::unix_now(), "a current timestamp");
    }

    #[test]
    fn buttons_are_drawn_and_picked_by_number_or_title() {
        let mut chat = chat();
        let lines = chat.bot_said(&reply(json!({"type": "interactive", "interactive": {
            "type": "button", "body": {"text": "Pick one"},
            "action": {"buttons": [
                {"type": "reply", "reply": {"id": "a", "title": "Opening hours"}},
                {"type": "reply", "reply": {"id": "b", "title": "Prices"}}]}}})));
        assert_eq!(
            lines,
            vec!["bot: Pick one", "     [1] Opening hours   [2] Prices"]
        );
        let m = webhook_message(chat.typed("2"));
        assert_eq!(
            m["interactive"]["button_reply"],
            json!({"id": "b", "title": "Prices"})
        );
        assert_eq!(m["context"]["id"], "wamid.OUT.1");
        let m = webhook_message(chat.typed("opening HOURS"));
        assert_eq!(m["interactive"]["button_reply"]["id"], "a");
        let m = webhook_message(chat.typed("/text 2"));
        assert_eq!(m["text"]["body"], "2");
        let m = webhook_message(chat.typed("7"));
        assert_eq!(m["type"], "text", "a number no choice has is text");
    }

    #[test]
    fn list_rows_answer_with_list_reply() {
        let mut chat = chat();
        let lines = chat.bot_said(&reply(json!({"type": "interactive", "interactive": {
            "type": "list", "body": {"text": "Delivery?"},
            "action": {"button": "Options", "sections": [{"title": "Ways", "rows": [
                {"id": "r1", "title": "Express", "description": "Tomorrow"}]}]}}})));
        assert_eq!(
            lines,
            vec![
                "bot: Delivery?",
                "     (Options)",
                "     Ways",
                "     [1] Express - Tomorrow"
            ]
        );
        let m = webhook_message(chat.typed("1"));
        assert_eq!(
            m["interactive"]["list_reply"],
            json!({"id": "r1", "title": "Express", "description": "Tomorrow"})
        );
    }

    #[test]
    fn commands_make_locations_media_and_flow_answers() {
        let mut chat = chat();
        let m = webhook_message(chat.typed("/location 41.0082 28.9784 Main store"));
        assert_eq!(m["location"]["latitude"], 41.0082);
        assert_eq!(m["location"]["name"], "Main store");
        assert!(matches!(chat.typed("/location x"), Typed::Nothing(Some(_))));
        let m = webhook_message(chat.typed("/image the broken part"));
        assert_eq!(m["image"]["caption"], "the broken part");
        assert!(m["image"]["id"].is_string());
        assert!(matches!(chat.typed("/flow {}"), Typed::Nothing(Some(_))));
        chat.bot_said(&reply(json!({"type": "interactive", "interactive": {
            "type": "flow", "body": {"text": "Book"},
            "action": {"name": "flow", "parameters": {"flow_cta": "Open", "flow_token": "tok"}}}})));
        let m = webhook_message(chat.typed("/flow {\"size\": \"4\"}"));
        let answers: Value = serde_json::from_str(
            m["interactive"]["nfm_reply"]["response_json"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(answers, json!({"size": "4", "flow_token": "tok"}));
        assert_eq!(chat.typed("/quit"), Typed::Quit);
        assert!(matches!(chat.typed("/nope"), Typed::Nothing(Some(_))));
    }

    #[test]
    fn what_a_chatbot_sends_beyond_text_is_drawn_as_the_phone_shows_it() {
        use crate::engine::{MediaType, Outgoing};
        use crate::whatsapp::outbound::graph_body;
        let mut chat = chat();
        let mut drawn = |msg: Outgoing| chat.bot_said(&reply(graph_body("15550001234", &msg)));
        assert_eq!(
            drawn(Outgoing::CtaUrl {
                header: None,
                body: "Follow your claim".into(),
                footer: Some("Harbour".into()),
                button: "Track".into(),
                url: "https://claims.example/t".into(),
            }),
            vec![
                "bot: Follow your claim",
                "     Harbour",
                "     [Track] https://claims.example/t"
            ]
        );
        assert_eq!(
            drawn(Outgoing::LocationRequest {
                body: "Where are you?".into()
            }),
            vec![
                "bot: Where are you?",
                "     [Send location] (answer with /location LAT LNG)"
            ]
        );
        assert_eq!(
            drawn(Outgoing::Media {
                media: MediaType::Document,
                link: None,
                id: Some("778".into()),
                caption: Some("Your invoice".into()),
                filename: Some("invoice.pdf".into()),
            }),
            vec!["bot: [document] Your invoice invoice.pdf 778"]
        );
    }

    #[test]
    fn media_and_templates_are_drawn() {
        let mut chat = chat();
        let lines = chat.bot_said(&reply(json!({"type": "image",
            "image": {"link": "https://example.com/a.jpg", "caption": "Our shop"}})));
        assert_eq!(
            lines,
            vec!["bot: [image] Our shop https://example.com/a.jpg"]
        );
        let lines = chat.bot_said(&reply(json!({"type": "template", "template": {
            "name": "order_update", "language": {"code": "en"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "17"}]}]}})));
        assert_eq!(
            lines,
            vec!["bot: [template order_update (en)]", "     body: 17"]
        );
    }
}
