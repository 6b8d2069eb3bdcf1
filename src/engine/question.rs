//! Question nodes: the message that asks (static or dynamic choices, list paging)
//! and the checks a typed answer must pass.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::event::AnswerKind;
use super::limits::{
    cut, BUTTONS, BUTTON_ID, BUTTON_TITLE, FOOTER_TEXT, HEADER_TEXT, INTERACTIVE_BODY, LIST_BUTTON,
    ROWS, ROW_DESCRIPTION, ROW_ID, ROW_TITLE, SECTION_TITLE, TEXT_BODY,
};
use super::node::{DynamicSource, KindRule, QuestionNode, QuestionType, Rule, Validation};
use super::outgoing::{Choice, ListSection, Outgoing};
use super::vars::{display, lookup, render};

/// Rows of one page of a long dynamic list, leaving room for two navigation rows.
const PAGE_SIZE: usize = 8;
pub const PAGE_PREV: &str = "__PAGE_PREV__";
pub const PAGE_NEXT: &str = "__PAGE_NEXT__";

/// The message that asks the question, with Meta's limits applied.
pub fn ask(q: &QuestionNode, vars: &Map<String, Value>) -> Outgoing {
    let body = render(&q.content, vars);
    let header = q
        .header
        .as_ref()
        .map(|h| cut(&render(h, vars), HEADER_TEXT));
    let footer = q
        .footer
        .as_ref()
        .map(|f| cut(&render(f, vars), FOOTER_TEXT));
    match q.question_type {
        QuestionType::Text => text(body),
        QuestionType::Location => Outgoing::LocationRequest {
            body: cut(&body, INTERACTIVE_BODY),
        },
        QuestionType::Buttons => {
            let buttons: Vec<Choice> = match &q.dynamic {
                Some(source) => dynamic_buttons(source, vars),
                None => q
                    .buttons
                    .iter()
                    .take(BUTTONS)
                    .map(|b| Choice {
                        id: b.id.clone(),
                        title: cut(&render(&b.title, vars), BUTTON_TITLE),
                        description: None,
                    })
                    .collect(),
            };
            if buttons.is_empty() {
                return text(body);
            }
            if let Some(template) = &q.template {
                // Asked with a template: its quick replies carry the buttons' ids.
                let payloads: Vec<(String, String)> = buttons
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (format!("button.{i}"), b.id.clone()))
                    .collect();
                return super::outgoing::template(template, vars, &payloads);
            }
            Outgoing::Buttons {
                header,
                body: cut(&body, INTERACTIVE_BODY),
                footer,
                buttons,
            }
        }
        QuestionType::List => {
            let sections = match &q.dynamic {
                Some(source) => dynamic_sections(source, vars),
                None => static_sections(&q.sections, vars),
            };
            if sections.iter().all(|s| s.rows.is_empty()) {
                return text(body);
            }
            Outgoing::List {
                header,
                body: cut(&body, INTERACTIVE_BODY),
                footer,
                button: cut(&render(&q.list_button, vars), LIST_BUTTON),
                sections,
            }
        }
    }
}

fn text(body: String) -> Outgoing {
    Outgoing::Text {
        body: cut(&body, TEXT_BODY),
    }
}

fn static_sections(sections: &[ListSection], vars: &Map<String, Value>) -> Vec<ListSection> {
    let mut budget = ROWS;
    sections
        .iter()
        .filter(|s| !s.rows.is_empty())
        .map(|s| {
            let rows: Vec<Choice> = s.rows.iter().take(budget).map(|r| row(r, vars)).collect();
            budget -= rows.len();
            ListSection {
                title: cut(&render(&s.title, vars), SECTION_TITLE),
                rows,
            }
        })
        .filter(|s| !s.rows.is_empty())
        .collect()
}

fn row(r: &Choice, vars: &Map<String, Value>) -> Choice {
    Choice {
        id: r.id.clone(),
        title: cut(&render(&r.title, vars), ROW_TITLE),
        description: r
            .description
            .as_ref()
            .map(|d| cut(&render(d, vars), ROW_DESCRIPTION))
            .filter(|d| !d.is_empty()),
    }
}

/// The items of a dynamic source: its array, or nothing.
fn items<'v>(source: &DynamicSource, vars: &'v Map<String, Value>) -> &'v [Value] {
    match lookup(vars, &source.source) {
        Some(Value::Array(items)) => items,
        _ => &[],
    }
}

/// A dynamic item's id, title and description.
fn item_choice(
    item: &Value,
    index: usize,
    source: &DynamicSource,
) -> (String, String, Option<String>) {
    let field = |name: &str| {
        item.get(name)
            .filter(|v| !v.is_null() && !v.is_object() && !v.is_array())
            .map(|v| display(v).into_owned())
            .filter(|s| !s.is_empty())
    };
    if !item.is_object() {
        let text = display(item).into_owned();
        return (text.clone(), text, None);
    }
    let title = source
        .label_field
        .as_deref()
        .and_then(field)
        .or_else(|| field("name"))
        .or_else(|| field("title"))
        .or_else(|| field("label"))
        .unwrap_or_else(|| format!("Item {}", index + 1));
    let description = match &source.desc_field {
        Some(f) => field(f),
        None => field("description"),
    };
    let id = field("id")
        .or_else(|| field("slug"))
        .unwrap_or_else(|| title.clone());
    (id, title, description)
}

fn dynamic_buttons(source: &DynamicSource, vars: &Map<String, Value>) -> Vec<Choice> {
    items(source, vars)
        .iter()
        .take(BUTTONS)
        .enumerate()
        .map(|(i, item)| {
            let (id, title, _) = item_choice(item, i, source);
            let id = if item.is_object() && item.get("id").is_none() && item.get("slug").is_none() {
                format!("btn-{i}")
            } else {
                id
            };
            Choice {
                id: cut(&id, BUTTON_ID),
                title: cut(&title, BUTTON_TITLE),
                description: None,
            }
        })
        .collect()
}

/// The `<source>_page` variable that keeps a dynamic list's page.
pub fn page_variable(source: &DynamicSource) -> String {
    format!("{}_page", source.source)
}

fn dynamic_sections(source: &DynamicSource, vars: &Map<String, Value>) -> Vec<ListSection> {
    let all = items(source, vars);
    let choice = |(i, item): (usize, &Value)| {
        let (id, title, description) = item_choice(item, i, source);
        Choice {
            id: cut(&id, ROW_ID),
            title: cut(&title, ROW_TITLE),
            description: description.map(|d| cut(&d, ROW_DESCRIPTION)),
        }
    };
    if all.len() <= ROWS {
        let rows = all.iter().enumerate().map(choice).collect();
        return vec![ListSection {
            title: "Seçenekler".into(),
            rows,
        }];
    }
    let pages = all.len().div_ceil(PAGE_SIZE);
    let requested = lookup(vars, &page_variable(source))
        .and_then(|p| p.as_u64().or_else(|| p.as_str()?.parse().ok()))
        .unwrap_or(1) as usize;
    let page = requested.clamp(1, pages);
    let start = (page - 1) * PAGE_SIZE;
    let mut rows: Vec<Choice> = all
        .iter()
        .enumerate()
        .skip(start)
        .take(PAGE_SIZE)
        .map(choice)
        .collect();
    if page > 1 {
        rows.push(Choice {
            id: format!("{PAGE_PREV}{}", page - 1),
            title: "Önceki Sayfa".into(),
            description: Some(format!("Sayfa {}/{pages}", page - 1)),
        });
    }
    if page < pages {
        rows.push(Choice {
            id: format!("{PAGE_NEXT}{}", page + 1),
            title: "Sonraki Sayfa".into(),
            description: Some(format!("Sayfa {}/{pages}", page + 1)),
        });
    }
    vec![ListSection {
        title: format!("Sayfa {page}/{pages}"),
        rows,
    }]
}

/// The page a navigation row asks for (`__PAGE_NEXT__3` → 3).
pub fn navigation_page(row_id: &str) -> Option<u64> {
    row_id
        .strip_prefix(PAGE_PREV)
        .or_else(|| row_id.strip_prefix(PAGE_NEXT))?
        .parse()
        .ok()
}

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[^\s@]+@[^\s@]+\.[^\s@]+$").expect("static regex"));

/// Checks a typed answer; the error is the retry prompt.
pub fn check(validation: &Validation, answer: &str) -> Result<(), String> {
    let answer = answer.trim();
    let fail = |default: &str| {
        Err(validation
            .error_message
            .clone()
            .unwrap_or_else(|| default.to_owned()))
    };
    let length = answer.chars().count();
    if validation.min_length.is_some_and(|min| length < min) {
        return fail(&format!(
            "Please enter at least {} characters.",
            validation.min_length.unwrap_or_default()
        ));
    }
    if validation.max_length.is_some_and(|max| length > max) {
        return fail(&format!(
            "Please enter at most {} characters.",
            validation.max_length.unwrap_or_default()
        ));
    }
    match &validation.rule {
        Rule::Any => {}
        Rule::Email if !EMAIL.is_match(answer) => {
            return fail("Please enter a valid email address.")
        }
        Rule::Email => {}
        Rule::Phone => {
            let digits = answer.chars().filter(char::is_ascii_digit).count();
            let allowed = answer
                .chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_digit() || " -().".contains(c) || (c == '+' && i == 0));
            if !allowed || !(7..=15).contains(&digits) {
                return fail("Please enter a valid phone number.");
            }
        }
        Rule::Number => {
            let Ok(number) = answer.replace(',', ".").parse::<f64>() else {
                return fail("Please enter a number.");
            };
            if !number.is_finite()
                || validation.min.is_some_and(|m| number < m)
                || validation.max.is_some_and(|m| number > m)
            {
                return fail("Please enter a number in the allowed range.");
            }
        }
        Rule::Regex(re) if !re.is_match(answer) => {
            return fail("Please check your answer and try again.")
        }
        Rule::Regex(_) => {}
        Rule::Kind(kind) => return fail(kind.prompt()),
    }
    Ok(())
}

/// The prompt when a text question cannot read what the customer sent.
pub const UNSUPPORTED_PROMPT: &str =
    "Sorry, this kind of message cannot be read here. Please answer with text.";

/// The prompt when a buttons or list question cannot read what the customer sent
/// and the node has no `invalidChoiceMessage`; the choices follow it.
pub const UNSUPPORTED_CHOICE_PROMPT: &str =
    "Sorry, this kind of message cannot be read here. Please choose one of the options.";

/// Whether the question asks for a kind of message (a location, a photo) rather
/// than text: then a tap on an older message's choice does not answer it either.
pub fn asks_for_kind(q: &QuestionNode) -> bool {
    kind_rule(q).is_some()
}

/// The kinds of message a question takes instead of text, when it asks for one:
/// a location question takes locations; a `validation.type` of wabot's its kinds.
fn kind_rule(q: &QuestionNode) -> Option<KindRule> {
    if q.question_type == QuestionType::Location {
        return Some(KindRule::Location);
    }
    match q.validation.as_ref()?.rule {
        Rule::Kind(kind) => Some(kind),
        _ => None,
    }
}

/// Checks typed text against what the question asks for; the error is the retry
/// prompt. A question that asks for a kind of message (a location, a photo) does not
/// take text.
pub fn check_text(q: &QuestionNode, answer: &str) -> Result<(), String> {
    if let Some(kind) = kind_rule(q) {
        return Err(error_message(q).unwrap_or_else(|| kind.prompt().to_owned()));
    }
    match &q.validation {
        Some(validation) => check(validation, answer),
        None => Ok(()),
    }
}

/// Checks a structured answer (media, a location, contacts) against what the
/// question asks for; the error is the retry prompt. Without a rule of kinds, a
/// question takes any of them, unless its validation is about text (an email, a
/// number, a length): then only text will do.
pub fn check_kind(q: &QuestionNode, kind: AnswerKind) -> Result<(), String> {
    let prompt = |default: &str| Err(error_message(q).unwrap_or_else(|| default.to_owned()));
    if kind == AnswerKind::Unsupported {
        if q.question_type.has_choices() {
            let text = q
                .invalid_choice_message
                .clone()
                .or_else(|| error_message(q));
            return Err(text.unwrap_or_else(|| UNSUPPORTED_CHOICE_PROMPT.to_owned()));
        }
        return prompt(kind_rule(q).map_or(UNSUPPORTED_PROMPT, KindRule::prompt));
    }
    if let Some(rule) = kind_rule(q) {
        return if rule.accepts(kind) {
            Ok(())
        } else {
            prompt(rule.prompt())
        };
    }
    match &q.validation {
        Some(v)
            if !matches!(v.rule, Rule::Any) || v.min_length.is_some() || v.max_length.is_some() =>
        {
            prompt("Please answer with text.")
        }
        _ => Ok(()),
    }
}

fn error_message(q: &QuestionNode) -> Option<String> {
    q.validation.as_ref()?.error_message.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(rule: Rule) -> Validation {
        Validation {
            rule,
            min_length: None,
            max_length: None,
            min: None,
            max: None,
            error_message: None,
            max_retries: 2,
        }
    }

    #[test]
    fn each_validation_rule_accepts_and_rejects() {
        assert!(check(&rule(Rule::Email), "a.b@example.com").is_ok());
        assert!(check(&rule(Rule::Email), "a.b@example").is_err());
        assert!(check(&rule(Rule::Phone), "+90 (555) 123-4567").is_ok());
        assert!(check(&rule(Rule::Phone), "12ab").is_err());
        assert!(check(&rule(Rule::Number), "3,5").is_ok());
        assert!(check(&rule(Rule::Number), "three").is_err());
        let regex = Regex::new(r"^\d{4}-\d{2}-\d{2}$").expect("regex");
        assert!(check(&rule(Rule::Regex(regex.clone())), "2026-12-01").is_ok());
        assert!(check(&rule(Rule::Regex(regex)), "01.12.2026").is_err());
        let bounded = Validation {
            min: Some(1.0),
            max: Some(10.0),
            ..rule(Rule::Number)
        };
        assert!(check(&bounded, "11").is_err());
        let length = Validation {
            min_length: Some(2),
            max_length: Some(3),
            error_message: Some("2 or 3 letters".into()),
            ..rule(Rule::Any)
        };
        assert_eq!(check(&length, "çok uzun"), Err("2 or 3 letters".to_owned()));
        assert!(check(&length, "öz").is_ok());
    }

    #[test]
    fn navigation_rows_name_their_page() {
        assert_eq!(navigation_page("__PAGE_NEXT__3"), Some(3));
        assert_eq!(navigation_page("__PAGE_PREV__1"), Some(1));
        assert_eq!(navigation_page("ord-3"), None);
    }
}
