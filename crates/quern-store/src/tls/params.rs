//! libpq's TLS parameters taken out of a connection string (URL or `key=value` form), the rest left for
//! tokio-postgres, which knows only three `sslmode`s and refuses `sslrootcert`, `sslcert` and `sslkey`.

use std::path::PathBuf;

use crate::StoreError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, StoreError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            // libpq's `allow` tries without TLS first, then with; `prefer` the other way round. Both go without
            // verification, so they succeed against the same servers.
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(StoreError::Config(format!(
                    "sslmode `{other}` in the database URL is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                )))
            }
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The mode tokio-postgres is given: whether to ask for TLS and whether to go on without it. Certificates
    /// are checked by the connector, not by the driver.
    pub(crate) fn driver(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// The TLS parameters found in a connection string, as written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TlsParams {
    pub(crate) sslmode: Option<SslMode>,
    /// A PEM file, or `system`.
    pub(crate) sslrootcert: Option<String>,
    pub(crate) sslcert: Option<PathBuf>,
    pub(crate) sslkey: Option<PathBuf>,
}

const KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Splits `conn` into the string tokio-postgres is given (every other parameter kept as written) and the TLS
/// parameters. Errors never quote the string, which may hold a password.
pub(crate) fn take(conn: &str) -> Result<(String, TlsParams), StoreError> {
    let (rest, pairs) = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        take_from_url(conn)?
    } else {
        take_from_key_values(conn)
    };
    let mut params = TlsParams::default();
    for (key, value) in pairs {
        match key {
            "sslmode" => params.sslmode = Some(SslMode::parse(&value)?),
            "sslrootcert" => params.sslrootcert = Some(value).filter(|v| !v.is_empty()),
            "sslcert" => params.sslcert = Some(PathBuf::from(value)).filter(|v| !v.as_os_str().is_empty()),
            _ => params.sslkey = Some(PathBuf::from(value)).filter(|v| !v.as_os_str().is_empty()),
        }
    }
    Ok((rest, params))
}

type Pairs = Vec<(&'static str, String)>;

/// `postgres://…?a=1&sslmode=verify-full&b=2` → `postgres://…?a=1&b=2`, values percent-decoded.
fn take_from_url(url: &str) -> Result<(String, Pairs), StoreError> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), Vec::new())) };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key);
        match KEYS.iter().find(|k| key.as_deref() == Some(**k)) {
            Some(key) => {
                let value = percent_decode(value).ok_or_else(|| {
                    StoreError::Config(format!(
                        "the value of {key} in the database URL is not valid percent-encoded UTF-8"
                    ))
                })?;
                taken.push((*key, value));
            }
            None => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((rest, taken))
}

/// `host=db sslmode='verify-full' user=app` → `host=db  user=app`, by libpq's rules: optional spaces around
/// `=`, values in single quotes or bare, `\` escaping the next character. A string these rules cannot read is
/// left whole, for tokio-postgres to refuse.
fn take_from_key_values(conn: &str) -> (String, Pairs) {
    let Some(pairs) = key_value_spans(conn) else { return (conn.to_owned(), Vec::new()) };
    let mut rest = String::with_capacity(conn.len());
    let mut taken = Vec::new();
    let mut copied_to = 0;
    for (span, key, value) in pairs {
        if let Some(key) = KEYS.iter().find(|k| **k == key) {
            rest.push_str(&conn[copied_to..span.start]);
            copied_to = span.end;
            taken.push((*key, value));
        }
    }
    rest.push_str(&conn[copied_to..]);
    (rest, taken)
}

/// Each pair's byte range, key and unescaped value; `None` if the string does not follow libpq's syntax.
fn key_value_spans(conn: &str) -> Option<Vec<(std::ops::Range<usize>, &str, String)>> {
    let bytes = conn.as_bytes();
    let skip_spaces = |mut at: usize| {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        at
    };
    let mut pairs = Vec::new();
    let mut at = skip_spaces(0);
    while at < bytes.len() {
        let start = at;
        while at < bytes.len() && bytes[at] != b'=' && !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let key = &conn[start..at];
        at = skip_spaces(at);
        if bytes.get(at) != Some(&b'=') {
            return None;
        }
        at = skip_spaces(at + 1);
        let quoted = bytes.get(at) == Some(&b'\'');
        if quoted {
            at += 1;
        }
        let mut value = Vec::new();
        loop {
            match bytes.get(at) {
                None if quoted => return None,
                None => break,
                Some(b'\'') if quoted => {
                    at += 1;
                    break;
                }
                Some(b) if !quoted && b.is_ascii_whitespace() => break,
                Some(b'\\') => {
                    value.push(*bytes.get(at + 1)?);
                    at += 2;
                }
                Some(b) => {
                    value.push(*b);
                    at += 1;
                }
            }
        }
        pairs.push((start..at, key, String::from_utf8(value).ok()?));
        at = skip_spaces(at);
    }
    Some(pairs)
}

/// `%2Fca.pem` → `/ca.pem`; `None` for a bad escape or bytes that are not UTF-8. `+` stays `+`, as in
/// tokio-postgres and libpq.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = std::str::from_utf8(bytes.get(at + 1..at + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(conn: &str) -> (String, TlsParams) {
        take(conn).expect("valid parameters")
    }

    #[test]
    fn url_parameters_are_taken_out_and_the_rest_kept_in_order() {
        let (rest, params) = split(
            "postgres://u:pw@db:5432/app?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20b.pem\
             &sslcert=/c.pem&sslkey=/k.pem&password=p%26w",
        );
        assert_eq!(rest, "postgres://u:pw@db:5432/app?application_name=x&password=p%26w");
        assert_eq!(
            params,
            TlsParams {
                sslmode: Some(SslMode::VerifyFull),
                sslrootcert: Some("/etc/ca b.pem".into()),
                sslcert: Some("/c.pem".into()),
                sslkey: Some("/k.pem".into()),
            }
        );
        let (rest, params) = split("postgresql://u@db/app?sslmode=require");
        assert_eq!((rest.as_str(), params.sslmode), ("postgresql://u@db/app", Some(SslMode::Require)));
        assert_eq!(split("postgres://u@db/app").0, "postgres://u@db/app");
    }

    #[test]
    fn key_value_parameters_are_taken_out_quoted_or_not() {
        let (rest, params) =
            split(r"host=db sslmode = verify-ca user=app sslrootcert='/my certs/ca\'s.pem' password='a b'");
        assert_eq!(rest, "host=db  user=app  password='a b'");
        assert_eq!(params.sslmode, Some(SslMode::VerifyCa));
        assert_eq!(params.sslrootcert.as_deref(), Some("/my certs/ca's.pem"));
        // Unreadable by libpq's rules: left whole, for tokio-postgres to refuse.
        assert_eq!(split("host=db sslmode").0, "host=db sslmode");
    }

    #[test]
    fn every_libpq_mode_is_known_and_an_unknown_one_is_named_without_the_url() {
        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("allow", SslMode::Prefer),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            assert_eq!(split(&format!("postgres://u@h/d?sslmode={text}")).1.sslmode, Some(mode));
        }
        let error = take("postgres://u:s3cret@h/d?sslmode=verify").expect_err("unknown mode").to_string();
        assert!(error.contains("sslmode `verify`") && !error.contains("s3cret"), "{error}");
    }

    #[test]
    fn empty_values_count_as_not_given() {
        assert_eq!(split("postgres://u@h/d?sslrootcert=&sslcert=").1, TlsParams::default());
    }
}
