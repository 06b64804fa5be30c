//! A submitted form or query string as its name and value pairs, in order; names may repeat (`id=a&id=b`).

/// The fields of one form or query string.
#[derive(Debug, Default, Clone)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// Reads `application/x-www-form-urlencoded` bytes (a query string is the same).
    pub fn parse(bytes: &[u8]) -> Form {
        Form { pairs: form_urlencoded::parse(bytes).map(|(k, v)| (k.into_owned(), v.into_owned())).collect() }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The first value of `name`, trimmed, if not empty.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name).map(str::trim).filter(|value| !value.is_empty()).map(str::to_owned)
    }

    /// Every non-empty value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(key, value)| key == name && !value.trim().is_empty())
            .map(|(_, value)| value.trim().to_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Form;

    #[test]
    fn repeated_names_keep_every_value_in_order() {
        let form = Form::parse(b"id=a&reason=contract&id=b+c&id=&older_than=%201h%20");
        assert_eq!(form.all("id"), ["a", "b c"]);
        assert_eq!(form.get("reason"), Some("contract"));
        assert_eq!(form.text("older_than").as_deref(), Some("1h"));
        assert_eq!(form.text("missing"), None);
        assert_eq!(Form::parse(b"x=").text("x"), None);
    }
}
