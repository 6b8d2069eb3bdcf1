//! rest_api nodes: building the request from the node and the variables, and
//! reading the response into `data`, `status` and `error`.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::http::{HttpError, HttpRequest, HttpResponse};
use super::node::{Auth, ContentType, RestApiNode};
use super::vars::{
    as_text, fold_case, interpolate, lookup_in, render, scrub_nul, scrub_nul_text, Escape,
};

/// What a rest_api node produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RestOutcome {
    pub success: bool,
    pub status: Option<u16>,
    pub data: Value,
    pub error: Option<String>,
}

/// Builds the request: URL, query parameters and headers interpolated, the body in
/// the node's content type, authentication applied, the timeout capped.
pub fn build_request(
    node: &RestApiNode,
    vars: &Map<String, Value>,
    max_timeout: Duration,
) -> Result<HttpRequest, String> {
    let raw_url = render(&node.url, vars);
    let mut url = url::Url::parse(raw_url.trim())
        .map_err(|e| format!("invalid URL `{}`: {e}", crate::text::redact_url(&raw_url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("unsupported URL scheme `{}`", url.scheme()));
    }
    {
        let mut query = url.query_pairs_mut();
        for (key, value) in &node.query {
            query.append_pair(&render(key, vars), &render(value, vars));
        }
        if let Auth::ApiKey {
            name,
            value,
            in_query: true,
        } = &node.auth
        {
            query.append_pair(name, &render(value, vars));
        }
    }
    // `query_pairs_mut` leaves a bare `?` behind when nothing was appended.
    if url.query() == Some("") {
        url.set_query(None);
    }
    let mut headers: Vec<(String, String)> = node
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), render(v, vars)))
        .collect();
    match &node.auth {
        Auth::None => {}
        Auth::Bearer(token) => headers.push((
            "Authorization".into(),
            format!("Bearer {}", render(token, vars)),
        )),
        Auth::Basic { username, password } => {
            let pair = format!("{}:{}", render(username, vars), render(password, vars));
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            headers.push(("Authorization".into(), format!("Basic {encoded}")));
        }
        Auth::ApiKey {
            name,
            value,
            in_query: false,
        } => headers.push((name.clone(), render(value, vars))),
        Auth::ApiKey { .. } => {}
    }
    let has_body = !matches!(node.method, http::Method::GET | http::Method::HEAD);
    let body = match (&node.body, has_body) {
        (Some(template), true) => {
            let (body, content_type) = encode_body(template, node.content_type, vars);
            let has_content_type = headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
            // A multipart boundary must match the body, so it replaces any given type.
            if node.content_type == ContentType::Multipart {
                headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
                headers.push(("Content-Type".into(), content_type));
            } else if !has_content_type {
                headers.push(("Content-Type".into(), content_type));
            }
            Some(body)
        }
        _ => None,
    };
    Ok(HttpRequest {
        method: node.method.clone(),
        url: url.to_string(),
        headers,
        body,
        timeout: Duration::from_millis(node.timeout_ms).min(max_timeout),
    })
}

const BOUNDARY: &str = "wabot-form-boundary-8f3a2c71d9";

fn encode_body(
    template: &str,
    content_type: ContentType,
    vars: &Map<String, Value>,
) -> (Vec<u8>, String) {
    match content_type {
        ContentType::Json => {
            let (body, _) = interpolate(template, vars, Escape::JsonString);
            (body.into_bytes(), "application/json".into())
        }
        ContentType::Form => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in form_fields(template, vars) {
                form.append_pair(&k, &v);
            }
            (
                form.finish().into_bytes(),
                "application/x-www-form-urlencoded".into(),
            )
        }
        ContentType::Multipart => {
            let mut body = String::new();
            for (k, v) in form_fields(template, vars) {
                let name = k.replace('"', "%22");
                body.push_str(&format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{v}\r\n"
                ));
            }
            body.push_str(&format!("--{BOUNDARY}--\r\n"));
            (
                body.into_bytes(),
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
        }
    }
}

/// Form fields from a JSON object body, or from `a=b&c=d` / one `key=value` a line.
fn form_fields(template: &str, vars: &Map<String, Value>) -> Vec<(String, String)> {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(template) {
        return map
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => render(s, vars),
                    other => render(&other.to_string(), vars),
                };
                (k.clone(), text)
            })
            .collect();
    }
    render(template, vars)
        .split(['&', '\n'])
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// Reads the response: 2xx is success; the body is JSON when it parses, else text;
/// `data` is the body after the response path and the filter.
/// The longest error text read from an API's answer (it lands in `nodeOutputs`
/// and may be shown to the customer).
const ERROR_TEXT_MAX_CHARS: usize = 300;

/// The error an API's failure answer states, from the shapes APIs commonly use
/// (`message`, `error.message`, `error` as text, `errors[0].message`/`detail`,
/// `detail`, `error_description`, `response_status.messages[0].message` (Zoho),
/// `title`), else the body itself when it is text, capped.
fn error_message(body: &Value) -> Option<String> {
    const PATHS: &[&str] = &[
        "/message",
        "/error/message",
        "/error",
        "/errors/0/message",
        "/errors/0/detail",
        "/errors/0",
        "/detail",
        "/error_description",
        "/response_status/messages/0/message",
        "/response_status/message",
        "/title",
    ];
    let text = PATHS
        .iter()
        .filter_map(|p| body.pointer(p))
        .find(|v| v.is_string() || v.is_number())
        .map(|v| as_text(Some(v)).into_owned())
        .or_else(|| body.as_str().map(str::to_owned))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())?;
    Some(crate::text::truncate_chars(&text, ERROR_TEXT_MAX_CHARS))
}

pub fn read_response(
    node: &RestApiNode,
    vars: &Map<String, Value>,
    result: Result<HttpResponse, HttpError>,
) -> RestOutcome {
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            return RestOutcome {
                success: false,
                status: None,
                data: Value::Null,
                error: Some({
                    let mut text = e.to_string();
                    scrub_nul_text(&mut text);
                    text
                }),
            }
        }
    };
    let mut body = match serde_json::from_slice::<Value>(&response.body) {
        Ok(v) => v,
        Err(_) => Value::String(String::from_utf8_lossy(&response.body).into_owned()),
    };
    scrub_nul(&mut body);
    if !(200..300).contains(&response.status) {
        let message = error_message(&body).unwrap_or_else(|| format!("HTTP {}", response.status));
        return RestOutcome {
            success: false,
            status: Some(response.status),
            data: body,
            error: Some(message),
        };
    }
    let mut data = match &node.response_path {
        Some(path) => lookup_in(&body, path).cloned().unwrap_or(Value::Null),
        None => body,
    };
    if let (Some(field), Value::Array(items)) = (&node.filter_field, &data) {
        let wanted = fold_case(&render(
            node.filter_value.as_deref().unwrap_or_default(),
            vars,
        ));
        data = Value::Array(
            items
                .iter()
                .filter(|item| fold_case(&as_text(lookup_in(item, field))) == wanted)
                .cloned()
                .collect(),
        );
    }
    RestOutcome {
        success: true,
        status: Some(response.status),
        data,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::engine::doc::Fields;
    use crate::engine::node::NodeKind;
    use crate::engine::parse::parse_kind;

    fn node(data: Value) -> RestApiNode {
        let mut problems = Vec::new();
        let map = data.as_object().cloned().unwrap_or_default();
        match parse_kind("rest_api", Fields(&map), &mut problems) {
            Some(NodeKind::RestApi(node)) if problems.is_empty() => *node,
            other => panic!("not a rest_api node: {other:?} {problems:?}"),
        }
    }

    fn vars() -> Map<String, Value> {
        json!({"q": {"response": "a b&c"}, "token": "s3cret", "name": "Ali \"A\""})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    fn header<'r>(request: &'r HttpRequest, name: &str) -> Option<&'r str> {
        request
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn query_parameters_and_api_keys_are_encoded_into_the_url() {
        let n = node(json!({"apiUrl": "https://api.example.com/items?fixed=1",
            "apiQueryParams": {"search": "{{q.response}}"},
            "apiAuthType": "api_key", "apiAuthKeyName": "key", "apiAuthKeyValue": "{{token}}",
            "apiAuthKeyLocation": "query"}));
        let request = build_request(&n, &vars(), Duration::from_secs(5)).expect("request");
        assert_eq!(
            request.url,
            "https://api.example.com/items?fixed=1&search=a+b%26c&key=s3cret"
        );
        assert_eq!(request.method, http::Method::GET);
        assert!(request.body.is_none());
        assert_eq!(
            request.timeout,
            Duration::from_secs(5),
            "capped by the limit"
        );
    }

    #[test]
    fn json_bodies_stay_valid_and_auth_headers_are_added() {
        let n = node(json!({"apiUrl": "https://x.test/", "apiMethod": "post",
            "apiBody": "{\"name\": \"{{name}}\"}", "apiAuthType": "bearer", "apiAuthToken": "{{token}}",
            "apiHeaders": [{"key": "X-Trace", "value": "{{q.response}}"}], "apiTimeout": "1500"}));
        let request = build_request(&n, &vars(), Duration::from_secs(30)).expect("request");
        let body: Value =
            serde_json::from_slice(request.body.as_deref().unwrap_or_default()).expect("JSON body");
        assert_eq!(body, json!({"name": "Ali \"A\""}));
        assert_eq!(header(&request, "authorization"), Some("Bearer s3cret"));
        assert_eq!(header(&request, "content-type"), Some("application/json"));
        assert_eq!(header(&request, "x-trace"), Some("a b&c"));
        assert_eq!(request.timeout, Duration::from_millis(1500));

        let basic = node(json!({"apiUrl": "https://x.test/", "apiAuthType": "basic",
            "apiAuthUsername": "u", "apiAuthPassword": "p"}));
        let request = build_request(&basic, &vars(), Duration::from_secs(30)).expect("request");
        assert_eq!(header(&request, "authorization"), Some("Basic dTpw"));
    }

    #[test]
    fn form_and_multipart_bodies_encode_fields() {
        let form = node(json!({"apiUrl": "https://x.test/", "apiMethod": "PUT",
            "apiContentType": "form-urlencoded", "apiBody": "{\"q\": \"{{q.response}}\", \"n\": 2}"}));
        let request = build_request(&form, &vars(), Duration::from_secs(30)).expect("request");
        assert_eq!(request.body.as_deref(), Some("q=a+b%26c&n=2".as_bytes()));
        assert_eq!(
            header(&request, "content-type"),
            Some("application/x-www-form-urlencoded")
        );

        let multipart = node(json!({"apiUrl": "https://x.test/", "apiMethod": "POST",
            "apiContentType": "multipart", "apiBody": "a=1\nb={{token}}",
            "apiHeaders": {"Content-Type": "text/plain"}}));
        let request = build_request(&multipart, &vars(), Duration::from_secs(30)).expect("request");
        let body = String::from_utf8(request.body.clone().unwrap_or_default()).expect("text");
        assert!(body.contains("name=\"b\"\r\n\r\ns3cret\r\n"), "{body}");
        assert!(header(&request, "content-type")
            .is_some_and(|c| c.starts_with("multipart/form-data; boundary=")));
    }

    #[test]
    fn responses_are_narrowed_by_path_and_filter() {
        let n = node(
            json!({"apiUrl": "https://x.test/", "apiResponsePath": "data.items",
            "apiFilterField": "type", "apiFilterValue": "{{q.response}}"}),
        );
        let body =
            json!({"data": {"items": [{"type": "A B&C", "id": 1}, {"type": "other", "id": 2}]}});
        let ok = read_response(
            &n,
            &vars(),
            Ok(HttpResponse {
                status: 200,
                body: body.to_string().into_bytes(),
            }),
        );
        assert!(ok.success);
        assert_eq!(ok.data, json!([{"type": "A B&C", "id": 1}]));
        let failed = read_response(
            &n,
            &vars(),
            Ok(HttpResponse {
                status: 404,
                body: b"not here".to_vec(),
            }),
        );
        assert_eq!(
            (failed.success, failed.status, failed.error.as_deref()),
            (false, Some(404), Some("not here"))
        );
        let down = read_response(&n, &vars(), Err(HttpError::Timeout));
        assert_eq!(
            (down.status, down.error.as_deref()),
            (None, Some("the request timed out"))
        );
    }

    #[test]
    fn error_texts_are_read_from_the_usual_shapes_then_the_body_capped() {
        let cases = [
            (json!({"message": "bad email"}), "bad email"),
            (json!({"error": {"message": "nope"}}), "nope"),
            (json!({"error": "denied"}), "denied"),
            (json!({"errors": [{"message": "first"}]}), "first"),
            (json!({"detail": "Not found."}), "Not found."),
            (
                json!({"response_status": {"status_code": 400,
                        "messages": [{"message": "Invalid zoho field"}]}}),
                "Invalid zoho field",
            ),
            (json!("plain text failure"), "plain text failure"),
        ];
        for (body, expected) in cases {
            assert_eq!(error_message(&body).as_deref(), Some(expected), "{body}");
        }
        assert_eq!(error_message(&json!({"code": 7})), None);
        let long = error_message(&json!("x".repeat(5000))).unwrap();
        assert_eq!(long.chars().count(), ERROR_TEXT_MAX_CHARS);
    }

    #[test]
    fn urls_that_are_not_http_are_refused() {
        let n = node(json!({"apiUrl": "file:///etc/passwd"}));
        assert!(build_request(&n, &vars(), Duration::from_secs(1)).is_err());
        let n = node(json!({"apiUrl": "{{missing}}/x"}));
        assert!(build_request(&n, &vars(), Duration::from_secs(1)).is_err());
    }
}
