//! Opening AMQP connections (`amqp://`, or `amqps://` with the TLS settings of [`crate::tls`]), and showing their
//! URLs without the password.

use std::str::FromStr;

use lapin::tcp::{AMQPUriTcpExt, TLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};

use crate::error::describe;
use crate::tls::TlsSettings;
use crate::QueueError;

/// Connects to `url`; `name` shows in the management UI's connection list (e.g. `quern-worker@host`). An
/// `amqps://` URL connects over TLS, with the settings in its query (see [`crate::tls`]).
pub async fn connect(url: &str, name: &str) -> Result<Connection, QueueError> {
    let uri = parse_url(url)?;
    let settings = TlsSettings::from_url(url)?;
    let tls = match &settings {
        Some(settings) => {
            if !settings.verify_peer {
                tracing::warn!(
                    "TLS without certificate verification (verify=verify_none): anyone between here and {} can \
                     pose as the broker",
                    uri.authority.host
                );
            }
            let server_name = settings.server_name.clone().unwrap_or_else(|| uri.authority.host.clone());
            Some((settings.connector()?, server_name))
        }
        None => None,
    };
    let host = uri.authority.host.clone();
    let failed = |error: lapin::Error| {
        let reason = match (error.kind(), &settings) {
            (lapin::ErrorKind::IOError(io), Some(settings)) => settings.explain(io, &host),
            _ => None,
        };
        QueueError::Connect { url: redact_url(url), reason: reason.unwrap_or_else(|| describe(&error)) }
    };
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let runtime = lapin::runtime::default_runtime().map_err(failed)?;
    // lapin's own way to a socket (name resolution, TCP), then the TLS handshake with Quern's connector; lapin
    // calls this again when it recovers a connection.
    let open = async move |mut uri: AMQPUri, runtime| {
        uri.scheme = AMQPScheme::AMQP;
        let stream = uri.connect_with_config_async(TLSConfig::default(), &runtime).await?;
        match &tls {
            None => Ok(stream),
            Some((connector, server_name)) => Ok(stream.into_rustls(connector, server_name).await?),
        }
    };
    Connection::connector(uri, runtime, open, properties).await.map_err(failed)
}

/// Fails when `url` is not an AMQP URL lapin can use, or its TLS settings cannot be (a file that cannot be
/// read, say): a mistake no retry can fix, so callers check it before they start waiting for the broker.
pub fn check_url(url: &str) -> Result<(), QueueError> {
    parse_url(url)?;
    if let Some(settings) = TlsSettings::from_url(url)? {
        settings.connector()?;
    }
    Ok(())
}

fn parse_url(url: &str) -> Result<AMQPUri, QueueError> {
    AMQPUri::from_str(url).map_err(|reason| {
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
