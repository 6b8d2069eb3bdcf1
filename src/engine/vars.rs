//! Variables: paths into nested JSON (`flow_1.response.city`,
//! `rest_api_1.data[0].name`) and `{{path}}` interpolation.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// One step of a variable path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `a.b[0].c` into segments; `None` when the path is not well formed.
/// A leading `$.` (JSONPath style, as some response paths are written) is allowed.
pub fn parse_path(path: &str) -> Option<Vec<Segment<'_>>> {
    let path = path.trim();
    let path = path.strip_prefix("$.").unwrap_or(path);
    if path.is_empty() {
        return None;
    }
    let mut segments = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            if !key
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == ' ')
            {
                return None;
            }
            segments.push(Segment::Key(key));
        } else if rest.is_empty() {
            return None;
        }
        while !rest.is_empty() {
            let close = rest.find(']')?;
            let index = rest.get(1..close)?.trim().parse().ok()?;
            segments.push(Segment::Index(index));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return None;
            }
        }
    }
    Some(segments)
}

/// The value at `path` under `root`.
pub fn lookup<'v>(root: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let segments = parse_path(path)?;
    // A flat key with dots (stored by older executors) wins over the nested path.
    if let Some(v) = root.get(path.trim()) {
        return Some(v);
    }
    let (first, rest) = segments.split_first()?;
    let Segment::Key(first) = first else {
        return None;
    };
    let mut current = root.get(*first)?;
    for segment in rest {
        current = step(current, segment)?;
    }
    Some(current)
}

/// The value at `path` inside any JSON value (for response paths and filters).
pub fn lookup_in<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    let segments = parse_path(path)?;
    let mut current = root;
    for segment in &segments {
        current = step(current, segment)?;
    }
    Some(current)
}

fn step<'v>(value: &'v Value, segment: &Segment<'_>) -> Option<&'v Value> {
    match (segment, value) {
        (Segment::Key(k), Value::Object(map)) => map.get(*k),
        (Segment::Index(i), Value::Array(items)) => items.get(*i),
        // `items.0` reads an array element too.
        (Segment::Key(k), Value::Array(items)) => items.get(k.parse::<usize>().ok()?),
        _ => None,
    }
}

/// Stores `value` at `path`, creating objects on the way; a non-object in the way
/// is replaced. Paths with indexes store under the flat key instead.
pub fn assign(root: &mut Map<String, Value>, path: &str, value: Value) {
    let Some(segments) = parse_path(path) else {
        root.insert(path.to_owned(), value);
        return;
    };
    let keys: Option<Vec<&str>> = segments
        .iter()
        .map(|s| match s {
            Segment::Key(k) => Some(*k),
            Segment::Index(_) => None,
        })
        .collect();
    let Some(keys) = keys else {
        root.insert(path.trim().to_owned(), value);
        return;
    };
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut current = root;
    for key in parents {
        let slot = current
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(map) = slot else { return };
        current = map;
    }
    current.insert((*last).to_owned(), value);
}

/// How a value reads inside a message: strings as they are, numbers and booleans
/// as JSON text, a customer's media, location or contacts answer as its
/// [`answer_text`], other arrays as a numbered list and objects as `key: value` lines.
pub fn display(value: &Value) -> Cow<'_, str> {
    if let Some(text) = answer_text(value) {
        return Cow::Owned(text);
    }
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        Value::Number(_) | Value::Bool(_) => Cow::Owned(value.to_string()),
        Value::Array(items) => Cow::Owned(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| format!("{}. {}", i + 1, item_text(item)))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Value::Object(map) => Cow::Owned(
            map.iter()
                .filter(|(k, _)| !k.starts_with('_'))
                .map(|(k, v)| format!("{k}: {}", item_text(v)))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}

/// The media kinds of a media answer's `type`.
const MEDIA_KINDS: [&str; 5] = ["image", "video", "audio", "document", "sticker"];

/// The text a structured answer (see `engine::event`) reads as when it is inserted
/// whole, as WhatsApp Builder inserts a message: media by its caption, else
/// `[image]` (`[document]`, ...); a location by its name and address, else
/// `latitude, longitude`; contacts by their names. `None` for any other value.
/// Recognised by shape, since a variable keeps no note of where it came from.
pub fn answer_text(value: &Value) -> Option<String> {
    fn text(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
    match value {
        Value::Object(map) => {
            let kind = map.get("type").and_then(Value::as_str);
            if kind.is_some_and(|k| MEDIA_KINDS.contains(&k))
                && map.contains_key("media_id")
                && map.contains_key("mime_type")
            {
                return Some(match text(map.get("caption")) {
                    Some(caption) => caption.to_owned(),
                    None => format!("[{}]", kind.unwrap_or_default()),
                });
            }
            let location_keys = ["latitude", "longitude", "name", "address"];
            if map.contains_key("latitude")
                && map.contains_key("longitude")
                && map.keys().all(|k| location_keys.contains(&k.as_str()))
            {
                let named: Vec<&str> = [text(map.get("name")), text(map.get("address"))]
                    .into_iter()
                    .flatten()
                    .collect();
                if !named.is_empty() {
                    return Some(named.join(", "));
                }
                let coordinate = |k: &str| map.get(k).map(|v| display(v).into_owned());
                return Some(format!(
                    "{}, {}",
                    coordinate("latitude").unwrap_or_default(),
                    coordinate("longitude").unwrap_or_default()
                ));
            }
            None
        }
        Value::Array(cards) if !cards.is_empty() => cards
            .iter()
            .map(|card| text(card.get("name")?.get("formatted_name")))
            .collect::<Option<Vec<&str>>>()
            .map(|names| names.join(", ")),
        _ => None,
    }
}

/// The placeholders of `template` whose variable is not set (unknown or null), as
/// written inside the braces.
pub fn unset_variables(template: &str, vars: &Map<String, Value>) -> Vec<String> {
    let mut unset = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        let inner = &rest[open + 2..open + 2 + close];
        if lookup(vars, inner).map_or(true, Value::is_null) {
            unset.push(inner.trim().to_owned());
        }
        rest = &rest[open + 2 + close + 2..];
    }
    unset
}

/// One list item on one line: a scalar as text, an object by its name-like field.
fn item_text(value: &Value) -> String {
    match value {
        Value::Object(map) => ["name", "title", "label", "displayName", "id"]
            .iter()
            .find_map(|k| map.get(*k).filter(|v| !v.is_null() && !v.is_object()))
            .map(|v| display(v).into_owned())
            .unwrap_or_else(|| value.to_string()),
        Value::Array(_) => value.to_string(),
        other => display(other).into_owned(),
    }
}

/// Lower case for comparisons that ignore case. Turkish `İ` folds to `i`: plain
/// `to_lowercase` turns it into `i` plus a combining dot, and `İzmir` would then
/// not contain `izm`.
pub fn fold_case(text: &str) -> String {
    text.replace('İ', "i").to_lowercase().replace('\u{307}', "")
}

/// The text a value compares as in conditions and filters (a customer's media,
/// location or contacts answer as its [`answer_text`]).
pub fn as_text(value: Option<&Value>) -> Cow<'_, str> {
    if let Some(text) = value.and_then(answer_text) {
        return Cow::Owned(text);
    }
    match value {
        None | Some(Value::Null) => Cow::Borrowed(""),
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(other) => Cow::Owned(other.to_string()),
    }
}

/// How an inserted value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    None,
    /// Escaped for the inside of a JSON string literal (rest_api JSON bodies).
    JsonString,
}

/// The most an interpolation writes (1 MiB): a template that repeats a placeholder
/// thousands of times over a large variable (an API answer of megabytes) would
/// otherwise build gigabytes before anything is cut. What would pass it is left out.
pub const MAX_INTERPOLATED_BYTES: usize = 1 << 20;

/// What `render` writes at most (64 KiB): message texts are cut to 4,096 characters
/// afterwards, so more is never sent.
pub const MAX_RENDERED_BYTES: usize = 64 << 10;

/// Replaces every `{{path}}` in `template`. Unknown paths stay as they are written
/// and are returned so that the caller can log them. The result is at most
/// [`MAX_INTERPOLATED_BYTES`].
pub fn interpolate(
    template: &str,
    vars: &Map<String, Value>,
    escape: Escape,
) -> (String, Vec<String>) {
    interpolate_within(template, vars, escape, MAX_INTERPOLATED_BYTES)
}

/// `interpolate`, writing at most `cap` bytes: plain text is cut at a character
/// boundary, a JSON-escaped value is left out whole rather than cut.
pub fn interpolate_within(
    template: &str,
    vars: &Map<String, Value>,
    escape: Escape,
    cap: usize,
) -> (String, Vec<String>) {
    let (out, unknown) = expand(template, vars, escape, cap);
    (crate::text::truncate_bytes(out, cap), unknown)
}

fn expand(
    template: &str,
    vars: &Map<String, Value>,
    escape: Escape,
    cap: usize,
) -> (String, Vec<String>) {
    let mut out = String::with_capacity(template.len().min(cap));
    let mut unknown = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        let inner = &rest[open + 2..open + 2 + close];
        out.push_str(&rest[..open]);
        let whole = &rest[open..open + 2 + close + 2];
        match lookup(vars, inner) {
            Some(value) => {
                let text = display(value);
                match escape {
                    Escape::None => out.push_str(&text),
                    Escape::JsonString => {
                        let quoted = Value::String(text.into_owned()).to_string();
                        let inside = &quoted[1..quoted.len() - 1];
                        // An escaped value goes in whole or not at all: cut, it could
                        // end inside an escape and break the JSON around it.
                        if out.len() + inside.len() > cap {
                            return (out, unknown);
                        }
                        out.push_str(inside);
                    }
                }
            }
            None => {
                out.push_str(whole);
                unknown.push(inner.trim().to_owned());
            }
        }
        rest = &rest[open + 2 + close + 2..];
        if out.len() >= cap {
            return (out, unknown);
        }
    }
    out.push_str(rest);
    (out, unknown)
}

/// `interpolate` for message texts; unknown variables are logged.
pub fn render(template: &str, vars: &Map<String, Value>) -> String {
    let (text, unknown) = interpolate_within(template, vars, Escape::None, MAX_RENDERED_BYTES);
    if !unknown.is_empty() {
        tracing::debug!(variables = ?unknown, "unknown variables left as written");
    }
    text
}

/// Interpolates every string inside a JSON value (Flow initial data).
pub fn render_value(value: &Value, vars: &Map<String, Value>) -> Value {
    match value {
        Value::String(s) => {
            // A string that is exactly one placeholder takes the variable's JSON value.
            let trimmed = s.trim();
            if trimmed.starts_with("{{")
                && trimmed.ends_with("}}")
                && trimmed[2..].find("{{").is_none()
            {
                if let Some(v) = lookup(vars, &trimmed[2..trimmed.len() - 2]) {
                    return v.clone();
                }
            }
            Value::String(render(s, vars))
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| render_value(v, vars)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render_value(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Replaces U+0000 in every string and key of `value` with U+FFFD. What a turn
/// stores (variables, node outputs, sent texts) goes into jsonb, which refuses
/// NUL: one in a rest_api answer or a Flow reply would fail every retry of the turn.
pub fn scrub_nul(value: &mut Value) {
    match value {
        Value::String(s) => scrub_nul_text(s),
        Value::Array(items) => items.iter_mut().for_each(scrub_nul),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries = std::mem::take(map);
                *map = entries
                    .into_iter()
                    .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), v))
                    .collect();
            }
            map.values_mut().for_each(scrub_nul);
        }
        _ => {}
    }
}

/// `scrub_nul` for one string.
pub fn scrub_nul_text(text: &mut String) {
    if text.contains('\0') {
        *text = text.replace('\0', "\u{FFFD}");
    }
}

#[cfg(test)]
mod tests {
    /// Found by the `vars` fuzz target (docs/fuzzing.md): a template repeating a
    /// placeholder over a large variable ran out of memory before anything cut it.
    #[test]
    fn interpolation_stops_at_its_cap() {
        let mut vars = Map::new();
        vars.insert("big".into(), Value::String("ş".repeat(100_000)));
        let template = "{{big}}".repeat(50_000);
        let (out, _) = interpolate(&template, &vars, Escape::JsonString);
        assert!(out.len() <= MAX_INTERPOLATED_BYTES, "{}", out.len());
        // Whole values only: 5 of 200,000 bytes fit.
        assert_eq!(out.len(), 5 * 200_000);
        let text = render(&template, &vars);
        assert!(text.len() <= MAX_RENDERED_BYTES);
        assert!(text.chars().all(|c| c == 'ş'));
        // Small templates are untouched.
        assert_eq!(render("a {{big}}", &Map::new()), "a {{big}}");
    }

    use serde_json::json;

    use super::*;

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn nested_paths_resolve_into_objects_and_arrays() {
        let v = vars(json!({"flow_1": {"response": {"city": "Izmir"}},
                            "rest_api_1": {"data": [{"name": "Ada"}, {"name": "Bob"}]}}));
        assert_eq!(render("{{flow_1.response.city}}", &v), "Izmir");
        assert_eq!(render("Hi {{ rest_api_1.data[1].name }}!", &v), "Hi Bob!");
        assert_eq!(render("{{rest_api_1.data.0.name}}", &v), "Ada");
    }

    #[test]
    fn unknown_variables_stay_as_written() {
        let v = vars(json!({"a": 1}));
        let (text, unknown) = interpolate("x {{b.c}} {{a}} {{", &v, Escape::None);
        assert_eq!(text, "x {{b.c}} 1 {{");
        assert_eq!(unknown, vec!["b.c".to_owned()]);
    }

    #[test]
    fn arrays_and_objects_render_as_lines() {
        let v = vars(json!({"l": ["a", "b"], "o": {"k": "v", "n": 2}, "p": [{"title": "T"}]}));
        assert_eq!(render("{{l}}", &v), "1. a\n2. b");
        assert_eq!(render("{{o}}", &v), "k: v\nn: 2");
        assert_eq!(render("{{p}}", &v), "1. T");
    }

    #[test]
    fn json_string_escape_keeps_bodies_valid() {
        let v = vars(json!({"name": "Ali \"the\" great"}));
        let (body, _) = interpolate(r#"{"n": "{{name}}"}"#, &v, Escape::JsonString);
        let parsed: Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(parsed["n"], "Ali \"the\" great");
    }

    #[test]
    fn assign_builds_nested_objects() {
        let mut v = Map::new();
        assign(&mut v, "question_1.response", json!("yes"));
        assign(&mut v, "question_1.other", json!(1));
        assert_eq!(
            Value::Object(v),
            json!({"question_1": {"response": "yes", "other": 1}})
        );
    }

    #[test]
    fn malformed_paths_are_rejected() {
        assert!(parse_path("a..b").is_none());
        assert!(parse_path("a[x]").is_none());
        assert!(parse_path("a[1]b").is_none());
        assert_eq!(parse_path("$.data[2]").map(|s| s.len()), Some(2));
    }
}
