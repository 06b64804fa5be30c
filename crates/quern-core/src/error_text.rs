//! How an error reads in a log line or a message to an operator: the words, without the parts meant for a
//! programmer (`Connection refused (os error 111)` becomes `connection refused`).

/// An I/O error in an operator's words: no `(os error N)`, and a capitalised first word (not an acronym such as
/// `TLS`) lower-cased, so it reads well after a colon.
pub fn io_error(error: &std::io::Error) -> String {
    let text = error.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => text.as_str(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if first.is_uppercase() && chars.next().is_some_and(char::is_lowercase) => {
            first.to_lowercase().chain(text[first.len_utf8()..].chars()).collect()
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::io_error;

    #[test]
    fn os_errors_lose_their_number_and_capital_but_acronyms_keep_theirs() {
        let refused = std::io::Error::from_raw_os_error(111);
        assert_eq!(io_error(&refused), "connection refused");
        let custom = std::io::Error::other("TLS handshake failed");
        assert_eq!(io_error(&custom), "TLS handshake failed");
    }
}
