//! Opening AMQP connections, and showing their URLs without the password.

use std::str::FromStr;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

use crate::error::describe;
use crate::QueueError;

/// Connects to `url`; `name` shows in the management UI's connection list (e.g. `quern-worker@host`).
pub async fn connect(url: &str, name: &str) -> Result<Connection, QueueError> {
    check_url(url)?;
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, properties)
        .await
        .map_err(|error| QueueError::Connect { url: redact_url(url), reason: describe(&error) })
}

/// Fails when `url` is not an AMQP URL lapin can use: a mistake no retry can fix, so callers check it before
/// they start waiting for the broker.
pub fn check_url(url: &str) -> Result<(), QueueError> {
    AMQPUri::from_str(url).map(drop).map_err(|reason| {
        // The parser's messages may quote the whole URL, password included: keep those out.
        let reason = if reason.contains('\'') || reason.contains(url) { "not an AMQP URL".to_owned() } else { reason };
        let expected = "expected amqp://user:password@host:port/vhost";
        if url.contains("://") {
            QueueError::InvalidUrl(format!("{}: {reason}; {expected}", redact_url(url)))
        } else {
            // Without `scheme://` the user info cannot be told from the rest: show none of it.
            QueueError::InvalidUrl(format!("{reason}; {expected}"))
        }
    })
}

/// Whether `url` carries a password (in its user info or as a `password=` parameter), so must not be shown.
pub fn url_has_password(url: &str) -> bool {
    redact_url(url) != url
}

/// `url` with any password replaced by `***`, in the user info or a `password=` query parameter, for logs,
/// error messages and `--print-config`.
pub fn redact_url(url: &str) -> String {
    let url = redact_query_password(url);
    let url = url.as_str();
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { user.to_owned() };
            format!("{}://{}@{}", &url[..scheme_end], masked, &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// Masks the value of a `password=` query parameter (libpq and tokio-postgres accept one).
fn redact_query_password(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_owned() };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => param.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive() {
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=disable&password=pw"),
            "postgres://u@h/db?sslmode=disable&password=***"
        );
        assert!(url_has_password("amqp://guest:guest@h/%2f"));
        assert!(!url_has_password("postgres://postgres@h:5433/postgres"));
        assert_eq!(redact_url("amqp://guest:s3cret@host:5672/%2f"), "amqp://guest:***@host:5672/%2f");
        assert_eq!(redact_url("postgres://u:p@h/db?x=1"), "postgres://u:***@h/db?x=1");
        assert_eq!(redact_url("amqp://host:5672"), "amqp://host:5672");
        assert_eq!(redact_url("amqp://user@host"), "amqp://user@host");
        assert_eq!(redact_url("amqp://u:p%40ss@host/v"), "amqp://u:***@host/v");
    }

    #[test]
    fn a_bad_url_is_refused_without_showing_its_password() {
        for url in ["http://u:s3cret@host/", "amqp//u:s3cret@host", "u:s3cret"] {
            let error = check_url(url).expect_err("invalid").to_string();
            assert!(error.starts_with("invalid RabbitMQ URL"), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
            assert_eq!(check_url(url).expect_err("invalid").class(), quern_core::ErrorClass::Permanent);
        }
        assert!(check_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
    }

    /// A broker that is not there: one line naming the URL (password hidden) and the cause, once.
    #[tokio::test]
    async fn a_refused_connection_reads_as_one_line() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let url = format!("amqp://guest:s3cret@127.0.0.1:{port}/%2f");
        let error = connect(&url, "test").await.expect_err("nothing listens there");
        assert_eq!(
            error.to_string(),
            format!("cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:{port}/%2f: connection refused")
        );
        assert!(std::error::Error::source(&error).is_none(), "the cause is told once, in the message");
        assert_eq!(error.class(), quern_core::ErrorClass::Transient);
    }
}
