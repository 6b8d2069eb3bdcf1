//! The executor: one turn applies an event to the waiting node, then runs the
//! non-waiting nodes that follow until the next wait or the end.

use chrono::{DateTime, Utc};
use petgraph::graph::NodeIndex;
use serde_json::{json, Map, Value};

use super::compile::{CompiledChatbot, Node};
use super::condition;
use super::context::{reason, Context, ContextStatus, EngineState};
use super::event::{Answer, AnswerKind, Event};
use super::http::{HttpClient, HttpError, HttpRequest, CONNECTION_SCHEME};
use super::limits::{
    cut, EngineLimits, CAPTION, CTA_DISPLAY_TEXT, FOOTER_TEXT, HEADER_TEXT, INTERACTIVE_BODY,
    TEXT_BODY,
};
use super::node::{FlowNode, MessageNode, NodeKind, QuestionNode, QuestionType};
use super::outgoing::{MediaType, Outgoing};
use super::question::{self, navigation_page, page_variable};
use super::rest;
use super::vars::{assign, render, render_value, scrub_nul, scrub_nul_text, unset_variables};

/// Words that leave a waiting question or Flow by its default edge. Typed when no
/// conversation is active they start nothing ([`is_skip_word`]).
pub const SKIP_WORDS: [&str; 6] = ["skip", "cancel", "iptal", "atla", "vazgec", "vazgeç"];

/// Sent, with the Flow message again, when the customer writes while a Flow waits.
pub const FLOW_PENDING_PROMPT: &str =
    "Please fill in the form above, or type skip to go on without it.";

/// What a turn produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnResult {
    /// The context to save (inactive when the conversation ended).
    pub context: Context,
    /// The messages to send, in order.
    pub sends: Vec<Outgoing>,
    /// When to deliver `Event::WaitTimedOut` if nothing else arrives first.
    pub wait_deadline: Option<DateTime<Utc>>,
    /// The context ended because the customer asked to start over (a restart
    /// keyword) or came back after it expired: start a new context now and run it
    /// with `Event::ConversationStarted`.
    pub restart: bool,
    /// The context ended because the customer asked for a person: `keyword` (the
    /// chatbot's `handoverKeywords`) or `node` (a node with `handover: true`). The
    /// conversation now waits for an agent.
    pub handover: Option<&'static str>,
    /// Nodes executed in this turn.
    pub steps: u32,
    /// The ids of the nodes this turn handled, in order: the waiting node an answer,
    /// a timeout or a Flow reply was applied to, then every node executed.
    pub walked: Vec<String>,
}

/// Runs one turn. Pure apart from `http`, which rest_api nodes call; `now` is the
/// only clock. Never fails: every odd situation ends in a context state.
pub async fn run_turn<H: HttpClient>(
    bot: &CompiledChatbot,
    context: Context,
    event: Event,
    now: DateTime<Utc>,
    http: &H,
    limits: &EngineLimits,
) -> TurnResult {
    let state = context.state();
    let mut turn = Turn {
        bot,
        now,
        limits,
        http,
        state,
        ctx: context,
        sends: Vec::new(),
        restart: false,
        handover: None,
        steps: 0,
        walked: Vec::new(),
    };
    turn.apply(event).await;
    turn.finish()
}

struct Turn<'a, H> {
    bot: &'a CompiledChatbot,
    now: DateTime<Utc>,
    limits: &'a EngineLimits,
    http: &'a H,
    ctx: Context,
    state: EngineState,
    sends: Vec<Outgoing>,
    restart: bool,
    handover: Option<&'static str>,
    steps: u32,
    walked: Vec<String>,
}

/// Where a node sends the conversation next.
enum Step {
    To(Option<NodeIndex>),
    Wait,
}

impl<H: HttpClient> Turn<'_, H> {
    async fn apply(&mut self, event: Event) {
        if !self.ctx.is_active || self.ctx.status.is_final() {
            return;
        }
        let Some(current) = self.bot.find(&self.ctx.current_node_id) else {
            tracing::warn!(node = %self.ctx.current_node_id, "the context's node is not in the chatbot any more");
            self.end(ContextStatus::Completed, reason::NODE_MISSING);
            return;
        };
        let status = self.ctx.status;
        match event {
            Event::ConversationStarted => {
                if status == ContextStatus::Running {
                    self.advance(Some(current), reason::FLOW_COMPLETED).await;
                }
            }
            Event::InboundMessage {
                text,
                button_id,
                list_row_id,
                answer,
            } => {
                let typed = text
                    .as_deref()
                    .filter(|_| button_id.is_none() && list_row_id.is_none());
                if typed.is_some_and(|t| self.is_restart_word(t)) {
                    self.end(ContextStatus::Stopped, reason::RESTARTED);
                    self.restart = true;
                    return;
                }
                if typed.is_some_and(|t| self.is_handover_word(t)) {
                    self.ask_for_person(None);
                    return;
                }
                if self.state.deadline.is_some_and(|d| self.now >= d) && !self.state.node_timeout {
                    // The customer came back after the context's time to live: the
                    // old conversation is over and this message starts a new one.
                    self.end(ContextStatus::Expired, reason::EXPIRED);
                    self.restart = true;
                    return;
                }
                match status {
                    ContextStatus::WaitingInput => {
                        self.handled(current);
                        self.answer(current, text, button_id, list_row_id, answer)
                            .await
                    }
                    ContextStatus::WaitingFlow if typed.is_some_and(is_skip_word) => {
                        self.handled(current);
                        self.record(current, json!({"skipped": true}));
                        self.leave(current, None).await;
                    }
                    ContextStatus::WaitingFlow => {
                        self.handled(current);
                        let said = answer.map_or_else(|| json!(text), |a| a.value);
                        self.remind_flow(current, said);
                    }
                    ContextStatus::Running => {
                        self.advance(Some(current), reason::FLOW_COMPLETED).await
                    }
                    _ => {}
                }
            }
            Event::FlowReply {
                flow_token,
                response,
            } => {
                let for_this_node = token_matches(
                    flow_token.as_deref(),
                    self.ctx.id,
                    &self.ctx.current_node_id,
                );
                if status == ContextStatus::WaitingFlow && for_this_node {
                    self.handled(current);
                    self.flow_reply(current, response).await;
                } else {
                    tracing::debug!("Flow reply for another node or context ignored");
                }
            }
            Event::FlowSendFailed { error } => {
                if status != ContextStatus::WaitingFlow {
                    return;
                }
                tracing::info!(node = %self.ctx.current_node_id, %error, "the Flow message was not sent");
                self.handled(current);
                self.record(current, json!({"success": false, "error": error}));
                assign(&mut self.ctx.variables, "api_error", Value::String(error));
                if self.bot.next(current, Some("error")).is_none() {
                    self.end(ContextStatus::Completed, reason::FLOW_ERROR);
                    return;
                }
                self.leave(current, Some("error")).await;
            }
            Event::WaitTimedOut => {
                let waiting = matches!(
                    status,
                    ContextStatus::WaitingInput | ContextStatus::WaitingFlow
                );
                if !waiting || !self.state.deadline.is_some_and(|d| self.now >= d) {
                    return;
                }
                if !self.state.node_timeout {
                    self.end(ContextStatus::Expired, reason::EXPIRED);
                    return;
                }
                self.handled(current);
                self.timed_out(current).await;
            }
        }
    }

    /// Notes the waiting node an event was applied to.
    fn handled(&mut self, index: NodeIndex) {
        self.walked.push(self.bot.node(index).id.clone());
    }

    fn is_handover_word(&self, text: &str) -> bool {
        let word = fold(text);
        self.bot.handover_keywords().contains(&word)
    }

    /// The customer asked for a person: the chatbot's handover message (for a
    /// keyword) is said and the run ends; the caller records the request.
    fn ask_for_person(&mut self, at: Option<NodeIndex>) {
        if at.is_none() {
            if let Some(text) = self.bot.handover_message() {
                let body = cut(&render(text, &self.ctx.variables), TEXT_BODY);
                self.sends.push(Outgoing::Text { body });
            }
        }
        self.handover = Some(if at.is_some() { "node" } else { "keyword" });
        self.end(ContextStatus::Completed, reason::HANDOVER);
    }

    fn is_restart_word(&self, text: &str) -> bool {
        let word = fold(text);
        self.bot
            .restart_keywords()
            .iter()
            .chain(&self.limits.restart_keywords)
            .any(|k| fold(k) == word)
    }

    /// Runs nodes from `next` until one waits or the graph ends.
    async fn advance(&mut self, mut next: Option<NodeIndex>, mut end_reason: &'static str) {
        while let Some(index) = next {
            if self.steps >= self.limits.max_steps_per_turn
                || self.state.steps >= self.limits.max_steps_per_context
            {
                tracing::warn!(
                    context = %self.ctx.id,
                    node = %self.bot.node(index).id,
                    steps = self.steps,
                    "loop guard: step limit reached, ending the context"
                );
                self.end(ContextStatus::Completed, reason::STEP_LIMIT);
                return;
            }
            let node = self.bot.node(index);
            let sends = matches!(
                node.kind,
                NodeKind::Message(_) | NodeKind::Question(_) | NodeKind::Flow(_)
            );
            if sends && self.sends.len() >= self.limits.max_sends_per_turn as usize {
                tracing::warn!(
                    context = %self.ctx.id,
                    node = %node.id,
                    sends = self.sends.len(),
                    "loop guard: message limit of one turn reached, ending the context"
                );
                self.end(ContextStatus::Completed, reason::SEND_LIMIT);
                return;
            }
            self.steps += 1;
            self.state.steps += 1;
            self.walked.push(node.id.clone());
            // One event per node, inside the caller's turn span (its conversation,
            // job and chatbot ids); free when debug is filtered out.
            tracing::debug!(node = %node.id, kind = node.kind.type_name(), step = self.steps, "step");
            self.ctx.current_node_id = node.id.clone();
            self.ctx.status = ContextStatus::Running;
            let step = self.execute(index, node, &mut end_reason).await;
            match step {
                Step::To(target) => next = target,
                Step::Wait => return,
            }
        }
        self.end(ContextStatus::Completed, end_reason);
    }

    async fn execute(
        &mut self,
        index: NodeIndex,
        node: &Node,
        end_reason: &mut &'static str,
    ) -> Step {
        let vars = &self.ctx.variables;
        match &node.kind {
            NodeKind::Start => {
                self.ctx.node_history.push(node.id.clone());
                Step::To(self.bot.next(index, None))
            }
            NodeKind::Message(m) => {
                let output = self.message(m);
                self.record(index, output);
                self.ctx.node_history.push(node.id.clone());
                if node.handover {
                    self.ask_for_person(Some(index));
                    return Step::Wait;
                }
                Step::To(self.bot.next(index, None))
            }
            NodeKind::Condition(c) => {
                let result = condition::evaluate(c, vars);
                self.record(index, json!({"data": result}));
                self.ctx.node_history.push(node.id.clone());
                Step::To(
                    self.bot
                        .next(index, Some(if result { "true" } else { "false" })),
                )
            }
            NodeKind::RestApi(api) => {
                let outcome = match rest::build_request(api, vars, self.limits.max_http_timeout) {
                    Ok(request) => {
                        let result = self.http.send(request).await;
                        rest::read_response(api, &self.ctx.variables, result)
                    }
                    Err(e) => rest::read_response(api, vars, Err(HttpError::InvalidRequest(e))),
                };
                if !outcome.success {
                    tracing::info!(node = %node.id, error = outcome.error.as_deref(), "rest_api call failed");
                }
                let status = outcome.status.map_or(Value::Null, Value::from);
                let error = outcome.error.clone().map_or(Value::Null, Value::String);
                if let Some(name) = &node.var_name {
                    let vars = &mut self.ctx.variables;
                    assign(vars, &format!("{name}.data"), outcome.data.clone());
                    assign(vars, &format!("{name}.status"), status.clone());
                    assign(vars, &format!("{name}.error"), error.clone());
                }
                if let Some(legacy) = &api.output_variable {
                    assign(&mut self.ctx.variables, legacy, outcome.data.clone());
                }
                if let Some(legacy) = &api.error_variable {
                    assign(&mut self.ctx.variables, legacy, error.clone());
                }
                self.record(
                    index,
                    json!({"success": outcome.success, "statusCode": status, "data": outcome.data, "error": error}),
                );
                self.ctx.node_history.push(node.id.clone());
                let next = self.bot.next(
                    index,
                    Some(if outcome.success { "success" } else { "error" }),
                );
                // A failed call that leads nowhere ends the context as an API error;
                // one the graph handles is an ordinary path.
                if !outcome.success && next.is_none() {
                    *end_reason = reason::API_ERROR;
                }
                Step::To(next)
            }
            NodeKind::Calendar => {
                let message = "Google Calendar nodes are not supported by wabot";
                if let Some(name) = &node.var_name {
                    let result =
                        json!({"error": true, "message": message, "code": "NOT_SUPPORTED"});
                    assign(&mut self.ctx.variables, &format!("{name}.result"), result);
                }
                self.record(index, json!({"success": false, "error": message}));
                self.ctx.node_history.push(node.id.clone());
                Step::To(self.bot.next(index, Some("error")))
            }
            NodeKind::Question(q) => {
                self.state.retries = 0;
                if let (Some(connection), Some(source)) = (&q.connection, &q.dynamic) {
                    self.fetch_connection_rows(index, connection, &source.source)
                        .await;
                }
                let ask = question::ask(q, &self.ctx.variables);
                self.sends.push(ask);
                if node.handover {
                    // The question is said, and a person answers it.
                    self.ctx.node_history.push(node.id.clone());
                    self.ask_for_person(Some(index));
                    return Step::Wait;
                }
                self.wait(ContextStatus::WaitingInput, q.timeout_secs);
                Step::Wait
            }
            NodeKind::Flow(f) => {
                let send = self.flow_message(node, f);
                self.sends.push(send);
                self.wait(ContextStatus::WaitingFlow, f.timeout_secs);
                Step::Wait
            }
        }
    }

    /// Sends a message node's text, media or CTA URL message; returns its output
    /// (`{}`, or why a media or CTA link could not be sent).
    fn message(&mut self, m: &MessageNode) -> Value {
        let vars = &self.ctx.variables;
        let text = |t: &str| render(t, vars);
        if let Some(template) = &m.template {
            self.sends
                .push(super::outgoing::template(template, vars, &[]));
            return json!({});
        }
        if let Some(cta) = &m.cta {
            let body = text(cta.text.as_deref().unwrap_or(&m.content));
            let url = match render_link(&cta.url, vars) {
                Ok(url) => url,
                Err(error) => {
                    // The button cannot go, but what the node says still can.
                    if !body.trim().is_empty() {
                        let body = cut(&body, TEXT_BODY);
                        self.sends.push(Outgoing::Text { body });
                    }
                    return self.unsendable("ctaUrl.url", error);
                }
            };
            self.sends.push(Outgoing::CtaUrl {
                header: cta.header.as_deref().map(|h| cut(&text(h), HEADER_TEXT)),
                body: cut(&body, INTERACTIVE_BODY),
                footer: cta.footer.as_deref().map(|f| cut(&text(f), FOOTER_TEXT)),
                button: cut(&text(&cta.button), CTA_DISPLAY_TEXT),
                url,
            });
            return json!({});
        }
        let Some(media) = &m.media else {
            let body = cut(&text(&m.content), TEXT_BODY);
            self.sends.push(Outgoing::Text { body });
            return json!({});
        };
        // The text goes first, then the media: a caption belongs to the media alone.
        let body = cut(&text(&m.content), TEXT_BODY);
        let link = media.link.as_deref().map(|l| render_link(l, vars));
        let id = media.id.as_deref().map(|i| text(i).trim().to_owned());
        let checked = match (&link, &id) {
            (Some(Err(error)), _) => Err(error.clone()),
            (None, Some(id))
                if id.is_empty()
                    || !unset_variables(media.id.as_deref().unwrap_or_default(), vars)
                        .is_empty() =>
            {
                Err(format!(
                    "the media id `{id}` is empty or names a variable that is not set"
                ))
            }
            _ => Ok(()),
        };
        let link = link.and_then(Result::ok);
        let media_send = checked.map(|()| Outgoing::Media {
            media: media.kind,
            link,
            id,
            caption: media
                .caption
                .as_deref()
                .filter(|_| media.kind.takes_caption())
                .map(|c| cut(&text(c), CAPTION))
                .filter(|c| !c.trim().is_empty()),
            filename: media
                .filename
                .as_deref()
                .filter(|_| media.kind == MediaType::Document)
                .map(text)
                .filter(|f| !f.trim().is_empty()),
        });
        if !body.trim().is_empty() {
            self.sends.push(Outgoing::Text { body });
        }
        match media_send {
            Ok(send) => {
                self.sends.push(send);
                json!({})
            }
            Err(error) => self.unsendable("media", error),
        }
    }

    /// A media or CTA link that is no URL once its variables are filled in: Meta
    /// would refuse the message for good, so it is not sent, and the node's output
    /// says why; the conversation goes on.
    fn unsendable(&self, field: &str, error: String) -> Value {
        tracing::info!(node = %self.ctx.current_node_id, field, %error, "message not sent");
        json!({"success": false, "error": format!("{field}: {error}")})
    }

    /// A message while a Flow waits for its form: the customer is told to finish it
    /// or type a skip word, and gets the Flow message again (the old one may be far
    /// up the chat). The wait and its deadline stay as they were.
    fn remind_flow(&mut self, index: NodeIndex, said: Value) {
        let node = self.bot.node(index);
        let NodeKind::Flow(f) = &node.kind else {
            return;
        };
        let again = self.flow_message(node, f);
        self.sends.push(Outgoing::Text {
            body: FLOW_PENDING_PROMPT.to_owned(),
        });
        self.sends.push(again);
        self.record(
            index,
            json!({"success": false, "userResponse": said, "error": reason::FLOW_PENDING}),
        );
    }

    fn flow_message(&self, node: &Node, f: &FlowNode) -> Outgoing {
        let vars = &self.ctx.variables;
        Outgoing::Flow {
            header: f
                .header
                .as_ref()
                .map(|h| cut(&render(h, vars), HEADER_TEXT)),
            body: cut(&render(&f.body, vars), INTERACTIVE_BODY),
            footer: f
                .footer
                .as_ref()
                .map(|t| cut(&render(t, vars), FOOTER_TEXT)),
            flow_id: f.flow_id.clone(),
            flow_cta: f.cta.clone(),
            flow_token: self.ctx.flow_token(&node.id),
            flow_action: f.action,
            screen: f.initial_screen.clone(),
            data: f.initial_data.as_ref().map(|d| render_value(d, vars)),
        }
    }

    /// Stores the items of a data source connection under `source` (an empty list,
    /// and the error in the node's output, when they cannot be had).
    async fn fetch_connection_rows(&mut self, index: NodeIndex, connection: &str, source: &str) {
        let request = HttpRequest {
            method: http::Method::POST,
            url: format!("{CONNECTION_SCHEME}{connection}"),
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: serde_json::to_vec(&self.ctx.variables).ok(),
            timeout: self.limits.max_http_timeout,
        };
        let items = match self.http.send(request).await {
            Ok(response) if response.status == 200 => {
                match serde_json::from_slice::<Value>(&response.body) {
                    Ok(Value::Array(mut items)) => {
                        items.iter_mut().for_each(scrub_nul);
                        Ok(items)
                    }
                    _ => Err("the connection did not answer a list of items".to_owned()),
                }
            }
            Ok(response) => Err(String::from_utf8_lossy(&response.body).into_owned()),
            Err(e) => Err(e.to_string()),
        }
        .map_err(|mut error| {
            scrub_nul_text(&mut error);
            error
        });
        match items {
            Ok(items) => assign(&mut self.ctx.variables, source, Value::Array(items)),
            Err(error) => {
                tracing::warn!(connection, %error, "dynamic question rows unavailable");
                self.record(index, json!({"success": false, "error": error}));
                assign(&mut self.ctx.variables, source, Value::Array(Vec::new()));
            }
        }
    }

    /// Puts the context to wait with the node's own timeout or the context's TTL.
    fn wait(&mut self, status: ContextStatus, timeout_secs: Option<u64>) {
        // Both spans are capped (a year at most) so that no document or setting can
        // push the deadline past what a timestamp holds.
        const YEAR_SECS: u64 = 366 * 24 * 60 * 60;
        let ttl_secs = self.limits.context_ttl.as_secs().clamp(1, YEAR_SECS);
        let (secs, node_timeout) = match timeout_secs {
            Some(secs) => (secs.clamp(1, YEAR_SECS), true),
            None => (ttl_secs, false),
        };
        let deadline = self.now + chrono::Duration::seconds(secs as i64);
        self.state.deadline = Some(deadline);
        self.state.node_timeout = node_timeout;
        self.ctx.status = status;
        self.ctx.expires_at = Some(deadline);
    }

    async fn answer(
        &mut self,
        index: NodeIndex,
        text: Option<String>,
        button_id: Option<String>,
        list_row_id: Option<String>,
        answer: Option<Answer>,
    ) {
        let NodeKind::Question(q) = &self.bot.node(index).kind else {
            // The chatbot changed under a waiting context; carry on from this node.
            self.advance(Some(index), reason::FLOW_COMPLETED).await;
            return;
        };
        let typed = button_id.is_none() && list_row_id.is_none();
        if typed && text.as_deref().is_some_and(is_skip_word) {
            self.record(index, json!({"skipped": true}));
            if !q.question_type.has_choices() {
                self.leave(index, None).await;
                return;
            }
            // At a choice question a skip word takes the `default` edge; without one
            // the run ends. Taking the first edge of all (WhatsApp Builder's reading)
            // would answer "cancel" with a choice the customer never made.
            match self.bot.next_exact(index, "default") {
                Some(next) => self.leave_to(index, Some(next)).await,
                None => {
                    self.ctx.node_history.push(self.bot.node(index).id.clone());
                    self.end(ContextStatus::Completed, reason::SKIPPED);
                }
            }
            return;
        }
        if let (Some(row), Some(source)) = (&list_row_id, &q.dynamic) {
            if let Some(page) = navigation_page(row) {
                assign(
                    &mut self.ctx.variables,
                    &page_variable(source),
                    Value::from(page),
                );
                self.sends.push(question::ask(q, &self.ctx.variables));
                self.wait(ContextStatus::WaitingInput, q.timeout_secs);
                return;
            }
        }
        let choices = q.question_type.has_choices();
        let kind = answer.as_ref().map(|a| a.kind);
        // `as_text`: a reply of the other kind than the question offers (a typed text,
        // media, a location, a list row at a buttons question) is typed text to it.
        let (response, handle, as_text) = match (q.question_type, &button_id, &list_row_id, answer)
        {
            (QuestionType::Buttons, Some(id), _, _) | (QuestionType::List, _, Some(id), _) => {
                (Value::String(id.clone()), Some(id.as_str()), false)
            }
            (_, _, _, Some(a)) => (a.value, choices.then_some("default"), choices),
            (QuestionType::Text | QuestionType::Location, _, _, None) => match &text {
                Some(t) => (Value::String(t.clone()), None, false),
                None => return,
            },
            _ => match &text {
                Some(t) => (Value::String(t.clone()), Some("default"), true),
                None => return,
            },
        };
        // A message the engine cannot read is asked again and the node's output says
        // why; never stored as an answer, not even by `default` at a choice question
        // (a poll or a view-once photo is no choice).
        let unsupported = kind == Some(AnswerKind::Unsupported);
        let checked = match kind {
            Some(kind) if !choices || unsupported || q.validation.is_some() => {
                question::check_kind(q, kind)
            }
            Some(_) => Ok(()),
            // A tap on an older message's button is not the photo or location asked for.
            None if typed || question::asks_for_kind(q) => {
                question::check_text(q, text.as_deref().unwrap_or_default())
            }
            None => Ok(()),
        };
        if let Err(prompt) = checked {
            let why = if unsupported {
                reason::UNSUPPORTED_MESSAGE
            } else {
                reason::VALIDATION_FAILED
            };
            self.reject(index, q, Some(prompt.as_str()), response, kind, why)
                .await;
            return;
        }
        let next = self.bot.next(index, handle);
        // Typed text, or a tap on an older message's choice, that leads nowhere.
        // WhatsApp Builder ends the conversation here without a word (its sample
        // chatbot does, on any typed text): ask again instead, and past the retry
        // limit leave by `exhausted` or end with a reason that says why. One of the
        // question's own choices with no edge ends it as designed. Checked only
        // when there is no next node, so an ordinary answer pays nothing for it.
        if next.is_none() && (as_text || handle.is_some_and(|id| !q.offers(id))) {
            let prompt = q.invalid_choice_message.as_deref();
            let why = reason::NO_PATH_FOR_TYPED_TEXT;
            self.reject(index, q, prompt, response, kind, why).await;
            return;
        }
        self.store_answer(index, q, &response);
        let mut output = json!({"userResponse": response, "buttonId": button_id,
                                "listRowId": list_row_id,
                                "outputVariable": self.bot.node(index).var_name});
        if let Some(kind) = kind {
            output["messageType"] = json!(kind.as_str());
        }
        self.record(index, output);
        self.leave_to(index, next).await;
    }

    /// An answer the waiting question cannot take: asks again (`prompt` first, when
    /// there is one; a buttons or list question re-sends its choices, which an
    /// error alone would leave the customer without) until the question's retry
    /// limit, then leaves by `exhausted`, else ends the context with `why`. The
    /// node's output says why each time a structured answer (`kind`) is refused,
    /// and at the last refusal of any.
    async fn reject(
        &mut self,
        index: NodeIndex,
        q: &QuestionNode,
        prompt: Option<&str>,
        answer: Value,
        kind: Option<AnswerKind>,
        why: &'static str,
    ) {
        let mut output = json!({"success": false, "userResponse": answer, "error": why});
        if let Some(kind) = kind {
            output["messageType"] = json!(kind.as_str());
        }
        self.state.retries += 1;
        if self.state.retries <= q.max_retries() {
            if kind.is_some() {
                self.record(index, output);
            }
            if let Some(prompt) = prompt {
                self.sends.push(Outgoing::Text {
                    body: cut(&render(prompt, &self.ctx.variables), TEXT_BODY),
                });
            }
            // A location question re-sends its button too: the customer needs it.
            if q.question_type != QuestionType::Text {
                self.sends.push(question::ask(q, &self.ctx.variables));
            }
            self.wait(ContextStatus::WaitingInput, q.timeout_secs);
            return;
        }
        self.state.retries = 0;
        if why == reason::VALIDATION_FAILED {
            output["error"] = json!("validation_exhausted");
        }
        self.record(index, output);
        self.ctx.node_history.push(self.bot.node(index).id.clone());
        match self.bot.next_exact(index, "exhausted") {
            Some(next) => self.advance(Some(next), reason::FLOW_COMPLETED).await,
            None => self.end(ContextStatus::Completed, why),
        }
    }

    fn store_answer(&mut self, index: NodeIndex, q: &QuestionNode, answer: &Value) {
        let vars = &mut self.ctx.variables;
        if let Some(name) = &self.bot.node(index).var_name {
            assign(vars, &format!("{name}.response"), answer.clone());
        }
        if let Some(legacy) = &q.legacy_variable {
            assign(vars, legacy, answer.clone());
        }
    }

    /// Leaves a waiting node by `handle` and runs on.
    async fn leave(&mut self, index: NodeIndex, handle: Option<&str>) {
        self.leave_to(index, self.bot.next(index, handle)).await;
    }

    /// Leaves a waiting node for `next` (the end when `None`) and runs on.
    async fn leave_to(&mut self, index: NodeIndex, next: Option<NodeIndex>) {
        self.state.retries = 0;
        self.state.deadline = None;
        self.state.node_timeout = false;
        self.ctx.expires_at = None;
        self.ctx.node_history.push(self.bot.node(index).id.clone());
        self.advance(next, reason::FLOW_COMPLETED).await;
    }

    async fn flow_reply(&mut self, index: NodeIndex, mut response: Value) {
        scrub_nul(&mut response);
        if let Value::Object(map) = &mut response {
            map.remove("flow_token");
        }
        let node = self.bot.node(index);
        if let Some(name) = &node.var_name {
            assign(
                &mut self.ctx.variables,
                &format!("{name}.response"),
                response.clone(),
            );
        }
        if let NodeKind::Flow(f) = &node.kind {
            if let Some(legacy) = &f.output_variable {
                assign(&mut self.ctx.variables, legacy, response.clone());
            }
        }
        self.record(
            index,
            json!({"flowResponse": response, "outputVariable": node.var_name}),
        );
        self.leave(index, None).await;
    }

    async fn timed_out(&mut self, index: NodeIndex) {
        let node = self.bot.node(index);
        if let NodeKind::Question(q) = &node.kind {
            if let Some(message) = &q.timeout_message {
                self.sends.push(Outgoing::Text {
                    body: cut(&render(message, &self.ctx.variables), TEXT_BODY),
                });
            }
        }
        self.record(index, json!({"success": false, "error": "timeout"}));
        match self.bot.next_exact(index, "timeout") {
            Some(next) => {
                self.state.deadline = None;
                self.state.node_timeout = false;
                self.ctx.expires_at = None;
                self.ctx.node_history.push(node.id.clone());
                self.advance(Some(next), reason::FLOW_COMPLETED).await;
            }
            None => self.end(ContextStatus::Expired, reason::TIMEOUT),
        }
    }

    /// Records `nodeOutputs[nodeId]` with the common fields and `extra`.
    fn record(&mut self, index: NodeIndex, extra: Value) {
        let node = self.bot.node(index);
        let mut output = Map::new();
        output.insert("nodeId".into(), Value::String(node.id.clone()));
        output.insert(
            "nodeType".into(),
            Value::String(node.kind.type_name().into()),
        );
        output.insert("nodeLabel".into(), Value::String(node.label.clone()));
        output.insert("executedAt".into(), Value::String(self.now.to_rfc3339()));
        output.insert("success".into(), Value::Bool(true));
        if let Value::Object(extra) = extra {
            output.extend(extra.into_iter().filter(|(_, v)| !v.is_null()));
        }
        self.ctx
            .node_outputs
            .insert(node.id.clone(), Value::Object(output));
    }

    fn end(&mut self, status: ContextStatus, why: &str) {
        self.state.deadline = None;
        self.state.node_timeout = false;
        self.state.retries = 0;
        self.ctx.finish(status, why, self.now);
    }

    fn finish(mut self) -> TurnResult {
        self.ctx.set_state(&self.state);
        let waiting = matches!(
            self.ctx.status,
            ContextStatus::WaitingInput | ContextStatus::WaitingFlow
        );
        TurnResult {
            wait_deadline: if waiting && self.ctx.is_active {
                self.state.deadline
            } else {
                None
            },
            context: self.ctx,
            sends: self.sends,
            restart: self.restart,
            handover: self.handover,
            steps: self.steps,
            walked: self.walked,
        }
    }
}

/// Whether a typed text is one of the skip words (case, Turkish `İ` and surrounding
/// spaces aside). While a question or Flow waits it leaves by the default edge; when
/// no conversation is active it must not start a chatbot (WhatsApp Builder ignores
/// it), so callers check it before starting one.
pub fn is_skip_word(text: &str) -> bool {
    SKIP_WORDS.contains(&fold(text).as_str())
}

/// Trimmed and lower-cased for keyword matching; Turkish `İ` folds to `i` (plain
/// `to_lowercase` would leave a combining dot behind).
pub fn fold(text: &str) -> String {
    super::vars::fold_case(text.trim())
}

/// A reply without a readable token is taken for the waiting node; one with a
/// token must name this context and node.
fn token_matches(token: Option<&str>, context: uuid::Uuid, node: &str) -> bool {
    match token.and_then(super::context::parse_flow_token) {
        None => true,
        Some((id, n)) => id == context && n == node,
    }
}

/// A link's template filled in: refused when a variable in it is not set (the link
/// would go out with `{{claim_id}}` in it) or when it is no http(s) URL.
fn render_link(template: &str, vars: &Map<String, Value>) -> Result<String, String> {
    let unset = unset_variables(template, vars);
    if !unset.is_empty() {
        return Err(format!(
            "`{}` uses variables that are not set: {}",
            cut(template.trim(), 200),
            unset.join(", ")
        ));
    }
    let link = render(template, vars).trim().to_owned();
    web_link(&link).map(|()| link)
}

/// Whether a rendered link is one Meta can fetch or open: an http(s) URL.
fn web_link(link: &str) -> Result<(), String> {
    match url::Url::parse(link) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(format!("`{}` is not an http(s) URL", cut(link, 200))),
    }
}
