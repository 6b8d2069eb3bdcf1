//! JSON request bodies, read with the path of whatever field is wrong, so that a
//! validation error names it.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use super::problem::Problem;

/// A JSON body of type `T`; an empty body reads as `{}` for types that allow it.
pub struct Json<T>(pub T);

/// Why a body was refused: a problem document.
pub struct Rejected(pub Problem);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Rejected;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| Rejected(Problem::new(e.status(), "body", e.body_text())))?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            if json.as_deref().is_some_and(|t| t != "application/json") {
                return Err(Rejected(Problem::new(
                    axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "media-type",
                    "the body must be JSON (Content-Type: application/json)",
                )));
            }
            &bytes
        };
        parse(bytes).map(Json).map_err(Rejected)
    }
}

/// Deserializes `bytes`, naming the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner().to_string();
        let path = e.path().to_string();
        // serde says which field is missing or unknown only in its message.
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|p| inner.split_once(p))
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(name, _)| name.to_owned());
        let field = match (path.as_str(), named) {
            (".", Some(name)) => name,
            (".", None) => "body".to_owned(),
            // An unknown field is in the path already; a missing one is not.
            (p, Some(name)) if p == name || p.ends_with(&format!(".{name}")) => p.to_owned(),
            (p, Some(name)) => format!("{p}.{name}"),
            (p, None) => p.to_owned(),
        };
        let detail = inner.split(" at line ").next().unwrap_or(&inner).to_owned();
        Problem::invalid(&field, detail)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Send {
        to: String,
        text: String,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse::<Send>(br#"{"to": "1"}"#).unwrap_err();
        assert_eq!(e.errors[0].field, "text");
        let e = parse::<Send>(br#"{"to": 5, "text": "x"}"#).unwrap_err();
        assert_eq!(e.errors[0].field, "to");
        let e = parse::<Send>(br#"{"to": "1", "text": "x", "cc": 1}"#).unwrap_err();
        assert_eq!(e.errors[0].field, "cc");
    }
}
