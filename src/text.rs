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

#[cfg(test)]
mod tests {
    use super::truncate_chars;

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(truncate_chars("çğıöşü", 3), "çğı");
        assert_eq!(truncate_chars("abc", 10), "abc");
        assert_eq!(truncate_chars("abc", 0), "");
    }
}
