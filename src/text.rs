//! Text helpers every layer needs. Meta and PostgreSQL's `varchar(n)` count
//! characters, not bytes, so text is cut on character boundaries (Turkish text is
//! full of two-byte characters).

/// The first `max` characters of `text`.
pub fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
pub fn truncate_bytes(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// A URL fit for logs, Debug output and error texts: scheme, host, port and path
/// only. The userinfo and the query string are where API keys ride, so they go; a
/// text that is not a URL keeps only what comes before any `?` and after any `@`.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text.trim()) {
        // `mailto:`-like URLs without a host keep everything in the path: treat them
        // as text.
        Ok(mut parsed) if parsed.has_host() => {
            let had_query = parsed.query().is_some();
            // Both fail only for URLs that cannot carry userinfo; nothing to strip.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            let mut out = parsed.to_string();
            if had_query {
                out.push_str("?…");
            }
            out
        }
        _ => {
            let head = text.split(['?', '#']).next().unwrap_or_default();
            let mut out = match head.rsplit_once('@') {
                Some((_, host)) => host.to_owned(),
                None => head.to_owned(),
            };
            if head.len() < text.len() {
                out.push_str("?…");
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{redact_url, truncate_chars};

    #[test]
    fn urls_lose_their_userinfo_and_query() {
        assert_eq!(
            redact_url("https://u:p4ss@api.test:8443/v1/x?key=s3cret#frag"),
            "https://api.test:8443/v1/x?…"
        );
        assert_eq!(redact_url("http://api.test/a"), "http://api.test/a");
        assert_eq!(redact_url("not a url?key=s3cret"), "not a url?…");
        assert_eq!(redact_url("u:p4ss@api test/x"), "api test/x");
        assert_eq!(
            redact_url("postgres://wabot:pw@db.local:5432/wabot"),
            "postgres://db.local:5432/wabot"
        );
    }

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(truncate_chars("çğıöşü", 3), "çğı");
        assert_eq!(truncate_chars("abc", 10), "abc");
        assert_eq!(truncate_chars("abc", 0), "");
    }
}
