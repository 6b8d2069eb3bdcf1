use chrono::{Duration, TimeZone, Utc};

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap()
}

fn text(t: &str) -> Event {
    Event::InboundMessage {
        text: Some(t.to_owned()),
        button_id: None,
        list_row_id: None,
        answer: None,
    }
}

fn button(id: &str) -> Event {
    Event::InboundMessage {
        text: Some("Stop".to_owned()),
        button_id: Some(id.to_owned()),
        list_row_id: None,
        answer: None,
    }
}

fn state(has_context: bool) -> State {
    State {
        has_context,
        ..State::default()
    }
}

fn with_agent(mut s: State, how: HandoverState, minutes_ago: i64) -> State {
    s.handover = Some(Handover {
        state: how,
        last_agent_at: now() - Duration::minutes(minutes_ago),
    });
    s
}

fn decide_text(s: &State, t: &str) -> Decision {
    decide(&Rules::default(), s, Input::Message(&text(t)), now())
}

#[test]
fn a_first_message_starts_a_chatbot_and_a_later_one_continues() {
    assert_eq!(
        decide_text(&state(false), "hi"),
        Decision::Start { release: false }
    );
    assert_eq!(decide_text(&state(true), "hi"), Decision::Continue);
}

#[test]
fn a_skip_word_starts_nothing_but_answers_a_waiting_question() {
    assert_eq!(
        decide_text(&state(false), " Cancel "),
        Decision::Skip(Skip::SkipWordStartsNothing)
    );
    assert_eq!(decide_text(&state(true), "cancel"), Decision::Continue);
}

#[test]
fn stop_opts_out_whatever_runs_and_start_opts_back_in_only_when_out() {
    assert_eq!(
        decide_text(&state(true), "  STOP "),
        Decision::OptOut { confirm: true }
    );
    assert_eq!(
        decide_text(&state(false), "unsubscribe"),
        Decision::OptOut { confirm: true }
    );
    // Not exactly the word: ordinary text.
    assert_eq!(decide_text(&state(true), "stop it"), Decision::Continue);
    // START from a customer who never opted out is ordinary text (a trigger, say).
    assert_eq!(
        decide_text(&state(false), "start"),
        Decision::Start { release: false }
    );
    let out = State {
        opted_out: true,
        ..state(false)
    };
    assert_eq!(
        decide_text(&out, "Start"),
        Decision::OptIn { confirm: true }
    );
    // A tapped button titled "Stop" is a choice, not the word.
    assert_eq!(
        decide(
            &Rules::default(),
            &state(true),
            Input::Message(&button("b1")),
            now()
        ),
        Decision::Continue
    );
}

#[test]
fn the_words_are_configurable() {
    let rules = Rules::new(&SessionConfig {
        opt_out_words: vec!["DUR".into()],
        opt_in_words: vec!["BAŞLA".into()],
        ..SessionConfig::default()
    });
    let d = |s: &State, t: &str| decide(&rules, s, Input::Message(&text(t)), now());
    assert_eq!(d(&state(true), "dur"), Decision::OptOut { confirm: true });
    assert_eq!(d(&state(true), "stop"), Decision::Continue);
    let out = State {
        opted_out: true,
        ..state(false)
    };
    assert_eq!(d(&out, "başla"), Decision::OptIn { confirm: true });
}

#[test]
fn while_an_agent_has_the_conversation_the_bot_is_silent() {
    for how in [
        HandoverState::Agent,
        HandoverState::Requested,
        HandoverState::Paused,
    ] {
        let s = with_agent(state(true), how, 5);
        assert_eq!(
            decide_text(&s, "hello?"),
            Decision::Skip(Skip::AgentHasConversation(how))
        );
        assert_eq!(
            decide(&Rules::default(), &s, Input::Timer { current: true }, now()),
            Decision::Skip(Skip::AgentHasConversation(how)),
            "no timer sends anything either"
        );
        // The opt-out is still taken, silently.
        assert_eq!(decide_text(&s, "stop"), Decision::OptOut { confirm: false });
    }
}

#[test]
fn an_agent_silent_for_the_idle_time_gives_the_conversation_back_afresh() {
    let idle = Rules::default().handover_idle.num_minutes();
    let s = with_agent(state(true), HandoverState::Agent, idle + 1);
    assert_eq!(decide_text(&s, "hi"), Decision::Start { release: true });
    let s = with_agent(state(false), HandoverState::Requested, idle + 1);
    assert_eq!(
        decide_text(&s, "anyone?"),
        Decision::Start { release: true }
    );
    // A timer from before the handover does nothing.
    assert_eq!(
        decide(
            &Rules::default(),
            &with_agent(state(false), HandoverState::Agent, idle + 1),
            Input::Timer { current: true },
            now()
        ),
        Decision::Skip(Skip::NoActiveContext)
    );
    // An operator's resume gives it back at once, afresh.
    let s = with_agent(state(true), HandoverState::Released, 0);
    assert_eq!(decide_text(&s, "hi"), Decision::Start { release: true });
    // An operator's pause does not run out.
    let s = with_agent(state(true), HandoverState::Paused, 10 * idle);
    assert_eq!(
        decide_text(&s, "hi"),
        Decision::Skip(Skip::AgentHasConversation(HandoverState::Paused))
    );
}

#[test]
fn timers_run_only_for_the_current_wait() {
    let rules = Rules::default();
    let t = |s: &State, current| decide(&rules, s, Input::Timer { current }, now());
    assert_eq!(t(&state(true), true), Decision::Continue);
    assert_eq!(t(&state(true), false), Decision::Skip(Skip::WaitOver));
    assert_eq!(
        t(&state(false), true),
        Decision::Skip(Skip::NoActiveContext)
    );
}

#[test]
fn a_flow_reply_with_nothing_waiting_starts_nothing() {
    let reply = Event::FlowReply {
        flow_token: None,
        response: serde_json::json!({}),
    };
    assert_eq!(
        decide(
            &Rules::default(),
            &state(false),
            Input::Message(&reply),
            now()
        ),
        Decision::Skip(Skip::NoActiveContext)
    );
}

#[test]
fn a_restart_starts_afresh_unless_a_skip_word_found_its_wait_expired() {
    let hi = text("hi");
    let skip = text("skip");
    let word = |e| is_skip_word(Input::Message(e));
    assert!(!word(&hi) && word(&skip));
    assert!(!is_skip_word(Input::Timer { current: true }));
    assert!(after_run(word(&hi), true, ContextStatus::Expired));
    assert!(!after_run(word(&skip), true, ContextStatus::Expired));
    assert!(after_run(word(&skip), true, ContextStatus::Completed));
    assert!(!after_run(word(&hi), false, ContextStatus::Expired));
}

#[test]
fn skip_reasons_have_distinct_codes() {
    let mut codes: Vec<&str> = Skip::ALL.iter().map(|s| s.code()).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), Skip::ALL.len());
    assert!(Skip::WaitOver.is_benign() && !Skip::NoActiveChatbot.is_benign());
}
