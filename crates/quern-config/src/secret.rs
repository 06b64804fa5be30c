//! Secrets: typed as `SecretString` from the moment clap reads them (never in `Debug` output or logs), and read from
//! files as Kubernetes mounts them (`QUERN_DATABASE_PASSWORD_FILE`, `QUERN_AMQP_PASSWORD_FILE`,
//! `QUERN_EMBEDDING_API_KEY_FILE`), so a password need not sit in a URL in the pod's environment.

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

/// A setting that cannot be used, named as the user gave it (flag and environment variable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct SettingError {
    /// The flag and its environment variable, e.g. `--database-password-file (QUERN_DATABASE_PASSWORD_FILE)`.
    pub setting: String,
    /// What is wrong, never holding the secret itself.
    pub problem: String,
}

impl SettingError {
    pub(crate) fn new(setting: &str, problem: impl Into<String>) -> SettingError {
        SettingError { setting: setting.to_owned(), problem: problem.into() }
    }
}

/// clap's value parser for secrets: the value goes straight into a `SecretString`.
pub fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value.to_owned()))
}

/// Reads a secret file: its whole content, less one trailing line break (what `echo pw > file` and Kubernetes'
/// `stringData` leave). An empty file is an error, not an empty password.
pub fn read_secret_file(setting: &str, path: &Path) -> Result<SecretString, SettingError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| SettingError::new(setting, format!("cannot read {}: {error}", path.display())))?;
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if text.is_empty() {
        return Err(SettingError::new(setting, format!("{} is empty", path.display())));
    }
    Ok(SecretString::from(text.to_owned()))
}

/// A Postgres connection string with `password` added: as the URL query parameter libpq and tokio-postgres both
/// read (`postgres://u@h/db?password=…`), which also works for multi-host URLs, or as a `password='…'` pair in a
/// key=value connection string. Refused when the string holds a password already: two sources would leave the
/// reader guessing which one is used.
pub fn postgres_with_password(setting: &str, url: &str, password: &SecretString) -> Result<SecretString, SettingError> {
    let password = password.expose_secret();
    if url.contains("://") {
        let (before_query, query) = url.split_once('?').unwrap_or((url, ""));
        let in_userinfo =
            authority(before_query).and_then(|a| a.rsplit_once('@')).is_some_and(|(u, _)| u.contains(':'));
        let in_query = query.split('&').any(|pair| pair.starts_with("password="));
        if in_userinfo || in_query {
            return Err(already_has_password(setting, "the database URL"));
        }
        let separator = if query.is_empty() {
            if url.ends_with('?') {
                ""
            } else {
                "?"
            }
        } else {
            "&"
        };
        return Ok(SecretString::from(format!("{url}{separator}password={}", percent_encode(password))));
    }
    if url.split_whitespace().any(|pair| pair.trim_start().starts_with("password")) {
        return Err(already_has_password(setting, "the connection string"));
    }
    let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
    Ok(SecretString::from(format!("{url} password='{quoted}'")))
}

/// An AMQP URL with `password` put after its user name (`amqp://user:…@host/vhost`), percent-encoded. The user must
/// be in the URL: a password alone names nobody.
pub fn amqp_with_password(setting: &str, url: &str, password: &SecretString) -> Result<SecretString, SettingError> {
    let start = url.find("://").map(|i| i + 3).ok_or_else(|| {
        SettingError::new(setting, "the AMQP URL must look like amqp://user@host:5672/vhost to take a password")
    })?;
    let authority = authority(url).unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Err(SettingError::new(
            setting,
            "the AMQP URL names no user to give the password to: write amqp://user@host:5672/vhost",
        ));
    };
    if userinfo.contains(':') {
        return Err(already_has_password(setting, "the AMQP URL"));
    }
    let at = start + userinfo.len();
    let encoded = percent_encode(password.expose_secret());
    Ok(SecretString::from(format!("{}:{encoded}{}", &url[..at], &url[at..])))
}

fn already_has_password(setting: &str, what: &str) -> SettingError {
    SettingError::new(setting, format!("{what} holds a password already: give it in one place, not both"))
}

/// The `user:password@host:port` part of a URL.
fn authority(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    Some(&rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())])
}

/// RFC 3986 percent-encoding of everything but unreserved characters: safe in userinfo and in a query value.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    const SETTING: &str = "--database-password-file (QUERN_DATABASE_PASSWORD_FILE)";

    #[test]
    fn a_password_file_loses_one_line_break_and_must_hold_something() {
        let dir = std::env::temp_dir().join(format!("quern-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "s3cret \n").unwrap();
        assert_eq!(read_secret_file(SETTING, &file).unwrap().expose_secret(), "s3cret ");
        std::fs::write(&file, "a\r\n").unwrap();
        assert_eq!(read_secret_file(SETTING, &file).unwrap().expose_secret(), "a");
        std::fs::write(&file, "\n").unwrap();
        let error = read_secret_file(SETTING, &file).unwrap_err();
        assert!(error.to_string().contains("is empty") && error.to_string().starts_with(SETTING), "{error}");
        let missing = read_secret_file(SETTING, &dir.join("absent")).unwrap_err();
        assert!(missing.to_string().contains("cannot read") && missing.to_string().contains("absent"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_postgres_password_goes_into_the_query_or_the_key_value_string() {
        let with =
            |url: &str, p: &str| postgres_with_password(SETTING, url, &pw(p)).map(|s| s.expose_secret().to_owned());
        assert_eq!(
            with("postgres://app@db:5432/app", "p@ss w/rd").unwrap(),
            "postgres://app@db:5432/app?password=p%40ss%20w%2Frd"
        );
        assert_eq!(
            with("postgres://app@db/app?sslmode=verify-full", "x").unwrap(),
            "postgres://app@db/app?sslmode=verify-full&password=x"
        );
        assert_eq!(
            with("postgres://app@h1:5432,h2:5432/app", "x").unwrap(),
            "postgres://app@h1:5432,h2:5432/app?password=x"
        );
        assert_eq!(with("host=db user=app", "it's").unwrap(), "host=db user=app password='it\\'s'");
        for holding in ["postgres://app:old@db/app", "postgres://app@db/app?password=old", "host=db password=old"] {
            let error = with(holding, "x").unwrap_err();
            assert!(error.to_string().contains("holds a password already"), "{error}");
        }
    }

    #[test]
    fn an_amqp_password_goes_after_the_user() {
        let with = |url: &str, p: &str| amqp_with_password("s", url, &pw(p)).map(|s| s.expose_secret().to_owned());
        assert_eq!(with("amqps://quern@mq:5671/%2f", "a:b@c").unwrap(), "amqps://quern:a%3Ab%40c@mq:5671/%2f");
        assert_eq!(with("amqp://quern@mq", "x").unwrap(), "amqp://quern:x@mq");
        assert!(with("amqp://mq:5672/%2f", "x").unwrap_err().to_string().contains("names no user"));
        assert!(with("amqp://guest:guest@mq/%2f", "x").unwrap_err().to_string().contains("holds a password already"));
        assert!(with("mq:5672", "x").is_err());
    }
}
