//! Opening AMQP connections.

use lapin::{Connection, ConnectionProperties};

use crate::QueueError;

/// Connects to `url`; `name` shows in the management UI's connection list (e.g. `quern-worker@host`).
pub async fn connect(url: &str, name: &str) -> Result<Connection, QueueError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, properties).await.map_err(|source| QueueError::Connect { url: redact_url(url), source })
}

/// `url` with any password replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_survive() {
        assert_eq!(redact_url("amqp://guest:s3cret@host:5672/%2f"), "amqp://guest:***@host:5672/%2f");
        assert_eq!(redact_url("postgres://u:p@h/db?x=1"), "postgres://u:***@h/db?x=1");
        assert_eq!(redact_url("amqp://host:5672"), "amqp://host:5672");
        assert_eq!(redact_url("amqp://user@host"), "amqp://user@host");
        assert_eq!(redact_url("amqp://u:p%40ss@host/v"), "amqp://u:***@host/v");
    }
}
