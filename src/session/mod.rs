//! The session: one home for a conversation's rules.
//!
//! Given what is known of a conversation (whether a chatbot run is active, whether an
//! agent or an operator has the conversation, whether the customer opted out) and
//! one event (a customer's message or a timer), [`decide`] says what happens: run
//! the active chatbot, start one, stay silent and why, or take the customer's opt-out
//! or opt-in. After a run, [`after_run`] says whether the chatbot starts over.
//!
//! It is pure: no I/O, no clock of its own (`now` is an argument), so the turn stage
//! (`worker/turns.rs`), `wabot replay --dry-run` and `wabot simulate` call the same
//! rules and cannot disagree. Its inputs come from the turn batch's one read, so a
//! rule costs no statement per turn.
//!
//! The rules, in the order they apply to a customer's message:
//! 1. An opt-out word (exactly, after trimming and case folding) opts the customer
//!    out, whatever else is going on; an opt-in word opts an opted-out customer back
//!    in. Both are confirmed, unless an agent has the conversation (the bot never
//!    speaks then; the opt-out is still recorded).
//! 2. While an agent has the conversation (they wrote in it) or the customer waits
//!    for one (they asked for a person), nothing runs until the agent has been silent
//!    for the idle time; then the message starts the chatbot afresh. An operator's
//!    pause lasts until the operator resumes.
//! 3. With a chatbot run active, it runs.
//! 4. Otherwise a skip word starts nothing (as in WhatsApp Builder); anything else
//!    starts the chatbot its trigger keywords choose.
//!
//! A timer (a question's timeout, a Flow that could not be sent) runs only while its
//! wait is still the current one and no agent has the conversation.

use chrono::{DateTime, Duration, Utc};

use crate::config::SessionConfig;
use crate::engine::{self, ContextStatus, Event};

/// Who, besides the bot, has the conversation (`wabot_handover.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoverState {
    /// An agent wrote in it (WhatsApp Builder's inbox, or an echo of the WhatsApp
    /// Business app).
    Agent,
    /// The customer asked for a person and waits for one.
    Requested,
    /// An operator paused the bot (`wabot conversation pause`).
    Paused,
    /// An operator gave the conversation back (`wabot conversation resume`): like a
    /// handover that ran out, the customer's next message starts the chatbot afresh.
    Released,
}

impl HandoverState {
    pub fn as_str(self) -> &'static str {
        match self {
            HandoverState::Agent => "agent",
            HandoverState::Requested => "requested",
            HandoverState::Paused => "paused",
            HandoverState::Released => "released",
        }
    }

    /// The state a `wabot_handover.state` value names.
    pub fn parse(s: &str) -> Option<HandoverState> {
        match s {
            "agent" => Some(HandoverState::Agent),
            "requested" => Some(HandoverState::Requested),
            "paused" => Some(HandoverState::Paused),
            "released" => Some(HandoverState::Released),
            _ => None,
        }
    }
}

/// A conversation someone other than the bot has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handover {
    pub state: HandoverState,
    /// The agent's latest message (for a request or a pause: when it began).
    pub last_agent_at: DateTime<Utc>,
}

/// What the rules need to know of a conversation.
#[derive(Debug, Clone, Copy, Default)]
pub struct State {
    /// A chatbot run (an active context) is in progress.
    pub has_context: bool,
    pub handover: Option<Handover>,
    pub opted_out: bool,
}

/// What happened.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A customer's message, as the engine reads it.
    Message(&'a Event),
    /// A timer of the conversation; `current` when the wait it was set for is still
    /// the one the context is in.
    Timer { current: bool },
}

/// What the rules decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run the active chatbot with the event.
    Continue,
    /// Start the chatbot the message's trigger keywords choose. `release`: an
    /// agent's handover ran out (or was answered by this start); it ends, and an
    /// active context from before it ends too.
    Start { release: bool },
    /// Record the customer's opt-out; `confirm`: send the confirmation text.
    OptOut { confirm: bool },
    /// Lift the customer's opt-out; `confirm` as above.
    OptIn { confirm: bool },
    /// Nothing runs, for this reason (recorded with the job).
    Skip(Skip),
}

/// Why a turn ran nothing. Each has a stable code (for scripts and `wabot status`)
/// and a sentence (the turn's note).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// An agent or an operator has the conversation: the bot stays silent.
    AgentHasConversation(HandoverState),
    /// A skip word with no question waiting starts nothing.
    SkipWordStartsNothing,
    /// A timer whose wait was already answered (or replaced).
    WaitOver,
    /// A timer with no chatbot run to act on.
    NoActiveContext,
    /// No active chatbot answers this message (none active, or no trigger matched).
    NoActiveChatbot,
    /// The context's chatbot was deleted or no longer compiles.
    ChatbotUnusable,
    /// The job's message is no longer stored.
    MessageGone,
    /// The conversation has no customer to answer.
    NoCustomer,
    /// The job failed without an outcome too often (a crash each time).
    GivenUp,
}

impl Skip {
    /// Every reason, for listings.
    pub const ALL: [Skip; 11] = [
        Skip::AgentHasConversation(HandoverState::Agent),
        Skip::AgentHasConversation(HandoverState::Requested),
        Skip::AgentHasConversation(HandoverState::Paused),
        Skip::SkipWordStartsNothing,
        Skip::WaitOver,
        Skip::NoActiveContext,
        Skip::NoActiveChatbot,
        Skip::ChatbotUnusable,
        Skip::MessageGone,
        Skip::NoCustomer,
        Skip::GivenUp,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Skip::AgentHasConversation(HandoverState::Agent) => "agent_has_conversation",
            Skip::AgentHasConversation(HandoverState::Requested) => "waiting_for_agent",
            Skip::AgentHasConversation(HandoverState::Paused) => "paused",
            Skip::AgentHasConversation(HandoverState::Released) => "released",
            Skip::SkipWordStartsNothing => "skip_word",
            Skip::WaitOver => "wait_over",
            Skip::NoActiveContext => "no_active_context",
            Skip::NoActiveChatbot => "no_active_chatbot",
            Skip::ChatbotUnusable => "chatbot_unusable",
            Skip::MessageGone => "message_gone",
            Skip::NoCustomer => "no_customer",
            Skip::GivenUp => "given_up",
        }
    }

    /// The sentence the turn log and the job keep.
    pub fn note(self) -> &'static str {
        match self {
            Skip::AgentHasConversation(HandoverState::Agent) => {
                "an agent has the conversation: the bot stays silent"
            }
            Skip::AgentHasConversation(HandoverState::Requested) => {
                "the customer waits for an agent: the bot stays silent"
            }
            Skip::AgentHasConversation(HandoverState::Paused) => {
                "the bot is paused in this conversation"
            }
            // Never decided (a released handover does not hold); said for completeness.
            Skip::AgentHasConversation(HandoverState::Released) => {
                "the conversation was given back to the bot"
            }
            Skip::SkipWordStartsNothing => "a skip word starts no chatbot",
            Skip::WaitOver => "the wait this job was for is over",
            Skip::NoActiveContext => "no active context",
            Skip::NoActiveChatbot => "no active chatbot answers",
            Skip::ChatbotUnusable => "the context's chatbot is unusable",
            Skip::MessageGone => "the message is gone",
            Skip::NoCustomer => "the conversation has no customer",
            Skip::GivenUp => "given up after repeated attempts",
        }
    }

    /// Whether an operator has nothing to fix: the rules worked as meant.
    pub fn is_benign(self) -> bool {
        matches!(
            self,
            Skip::AgentHasConversation(_) | Skip::SkipWordStartsNothing | Skip::WaitOver
        )
    }
}

/// The rules' settings, words folded once.
#[derive(Debug, Clone)]
pub struct Rules {
    opt_out_words: Vec<String>,
    opt_in_words: Vec<String>,
    pub opt_out_message: String,
    pub opt_in_message: String,
    pub handover_idle: Duration,
}

impl Rules {
    pub fn new(config: &SessionConfig) -> Rules {
        let fold_all = |words: &[String]| words.iter().map(|w| fold(w)).collect();
        Rules {
            opt_out_words: fold_all(&config.opt_out_words),
            opt_in_words: fold_all(&config.opt_in_words),
            opt_out_message: config.opt_out_message.clone(),
            opt_in_message: config.opt_in_message.clone(),
            handover_idle: Duration::seconds(
                i64::try_from(config.handover_idle_secs).unwrap_or(i64::MAX / 1_000),
            ),
        }
    }

    /// Whether the handover still holds at `now`: a pause until the operator resumes,
    /// an agent or a request until the agent has been silent for the idle time.
    pub fn holds(&self, handover: &Handover, now: DateTime<Utc>) -> bool {
        match handover.state {
            HandoverState::Paused => true,
            HandoverState::Released => false,
            HandoverState::Agent | HandoverState::Requested => {
                now < handover.last_agent_at + self.handover_idle
            }
        }
    }

    fn is_opt_out(&self, text: &str) -> bool {
        let word = fold(text);
        self.opt_out_words.contains(&word)
    }

    fn is_opt_in(&self, text: &str) -> bool {
        let word = fold(text);
        self.opt_in_words.contains(&word)
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules::new(&SessionConfig::default())
    }
}

/// What happens to `input` in a conversation in `state`, at `now`.
pub fn decide(rules: &Rules, state: &State, input: Input<'_>, now: DateTime<Utc>) -> Decision {
    let held = state
        .handover
        .filter(|h| rules.holds(h, now))
        .map(|h| h.state);
    let event = match input {
        Input::Timer { current } => {
            return match held {
                Some(by) => Decision::Skip(Skip::AgentHasConversation(by)),
                None if !state.has_context => Decision::Skip(Skip::NoActiveContext),
                None if !current => Decision::Skip(Skip::WaitOver),
                None => Decision::Continue,
            };
        }
        Input::Message(event) => event,
    };
    let typed = typed_text(event);
    if let Some(text) = typed {
        if rules.is_opt_out(text) {
            return Decision::OptOut {
                confirm: held.is_none(),
            };
        }
        if state.opted_out && rules.is_opt_in(text) {
            return Decision::OptIn {
                confirm: held.is_none(),
            };
        }
    }
    if let Some(by) = held {
        return Decision::Skip(Skip::AgentHasConversation(by));
    }
    if state.handover.is_some() {
        // The agent went quiet: the bot has the conversation back, afresh.
        return Decision::Start { release: true };
    }
    if state.has_context {
        return Decision::Continue;
    }
    if !matches!(event, Event::InboundMessage { .. }) {
        // A Flow reply or the like with nothing waiting for it.
        return Decision::Skip(Skip::NoActiveContext);
    }
    if typed.is_some_and(engine::is_skip_word) {
        return Decision::Skip(Skip::SkipWordStartsNothing);
    }
    Decision::Start { release: false }
}

/// After a run whose result asks to start over (a restart word, or a message that
/// found the context expired): whether the chatbot starts afresh. A skip word that
/// found its wait expired answers nothing, so it starts nothing either.
/// `skip_word` is [`is_skip_word`] of the run's input.
pub fn after_run(skip_word: bool, restart: bool, status: ContextStatus) -> bool {
    restart && !(skip_word && status == ContextStatus::Expired)
}

/// Whether the input is a skip word the customer typed.
pub fn is_skip_word(input: Input<'_>) -> bool {
    match input {
        Input::Message(event) => typed_text(event).is_some_and(engine::is_skip_word),
        Input::Timer { .. } => false,
    }
}

/// The text the customer typed: a text message's body (a choice they tapped is not
/// typed text).
fn typed_text(event: &Event) -> Option<&str> {
    match event {
        Event::InboundMessage {
            text: Some(text),
            button_id: None,
            list_row_id: None,
            ..
        } => Some(text.as_str()),
        _ => None,
    }
}

/// Trimmed and case-folded, as every word the rules compare.
fn fold(text: &str) -> String {
    text.trim().to_lowercase()
}

#[cfg(test)]
mod tests;
