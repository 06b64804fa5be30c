//! `quern dlq show ID`: one dead letter in full (properties, every header, the body); it stays in its place.

use std::process::ExitCode;

use quern_queue::dead_letters::DeadLetter;
use quern_queue::lapin::types::{AMQPValue, FieldTable};
use quern_queue::lapin::BasicProperties;
use serde_json::{json, Map, Value};

use super::args::ShowArgs;
use super::list::read_all;
use super::view::{now_ms, rfc3339, LetterView};
use crate::output::outln;

/// Exit status when no dead letter has that id (as `quern status` for an unknown job).
const NOT_FOUND: u8 = 4;

pub async fn run(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let found = find(&args.broker, &args.id).await?;
    let Some(letter) = found else {
        eprintln!("quern dlq show: no dead letter with message id or job id `{}`", args.id);
        return Ok(ExitCode::from(NOT_FOUND));
    };
    let properties = properties_json(&letter.properties);
    let headers = letter.headers().map(table_json).unwrap_or_else(|| json!({}));
    let text = std::str::from_utf8(&letter.body).ok();
    if args.json {
        let (body, encoding) = match text {
            Some(text) => (text.to_owned(), "utf-8"),
            None => (base64(&letter.body), "base64"),
        };
        let value = json!({
            "id": args.id,
            "properties": properties,
            "headers": headers,
            "body": body,
            "body_encoding": encoding,
            "body_bytes": letter.body.len(),
        });
        outln!("{value}")?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("properties:")?;
    print_object(&properties)?;
    outln!("headers:")?;
    print_object(&headers)?;
    match text {
        Some(text) => outln!("body ({} bytes, UTF-8):\n{text}", letter.body.len())?,
        None => outln!("body ({} bytes, not valid UTF-8; base64):\n{}", letter.body.len(), base64(&letter.body))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The dead letter whose message id or body's job id is `id`, read without removing anything (every message goes
/// back to its place).
pub async fn find(broker: &quern_config::BrokerArgs, id: &str) -> anyhow::Result<Option<DeadLetter>> {
    let connection = super::connect(broker).await?;
    let now = now_ms();
    let mut found: Option<DeadLetter> = None;
    let read = read_all(&connection, &broker.topology, |letter| {
        if found.is_none() {
            let view = LetterView::new(letter, now);
            if view.message_id.as_deref() == Some(id) || view.job_id.as_deref() == Some(id) {
                found = Some(letter.clone());
            }
        }
    })
    .await;
    let _ = connection.close(200, "show done".into()).await;
    read?;
    Ok(found)
}

/// Prints `key: value` lines; times in ms get their RFC 3339 form, continuation lines are indented.
fn print_object(value: &Value) -> anyhow::Result<()> {
    for (key, value) in value.as_object().into_iter().flatten() {
        let mut shown = value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
        if let Some(at) = value.as_i64().filter(|_| key.ends_with("-at-ms")).and_then(rfc3339) {
            shown = format!("{shown} ({at})");
        }
        outln!("  {key}: {}", shown.replace('\n', "\n    "))?;
    }
    Ok(())
}

pub fn properties_json(p: &BasicProperties) -> Value {
    let mut out = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            out.insert(key.to_owned(), value);
        }
    };
    let text = |s: &Option<quern_queue::lapin::types::ShortString>| s.as_ref().map(|s| json!(s.as_str()));
    put("message_id", text(p.message_id()));
    put("content_type", text(p.content_type()));
    put("content_encoding", text(p.content_encoding()));
    put("delivery_mode", p.delivery_mode().map(|m| json!(m)));
    put("priority", p.priority().map(|m| json!(m)));
    put("correlation_id", text(p.correlation_id()));
    put("reply_to", text(p.reply_to()));
    put("expiration", text(p.expiration()));
    put("timestamp", p.timestamp().map(|t| json!(t)));
    put("type", text(p.kind()));
    put("user_id", text(p.user_id()));
    put("app_id", text(p.app_id()));
    Value::Object(out)
}

pub fn table_json(table: &FieldTable) -> Value {
    Value::Object(table.inner().iter().map(|(k, v)| (k.as_str().to_owned(), amqp_json(v))).collect())
}

/// A header value as JSON; bytes that are not UTF-8 become base64 text.
fn amqp_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(v) => json!(v),
        AMQPValue::ShortShortUInt(v) => json!(v),
        AMQPValue::ShortInt(v) => json!(v),
        AMQPValue::ShortUInt(v) => json!(v),
        AMQPValue::LongInt(v) => json!(v),
        AMQPValue::LongUInt(v) => json!(v),
        AMQPValue::LongLongInt(v) => json!(v),
        AMQPValue::Float(v) => json!(v),
        AMQPValue::Double(v) => json!(v),
        AMQPValue::DecimalValue(d) => json!(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => bytes_json(s.as_bytes()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_json).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => table_json(t),
        AMQPValue::ByteArray(b) => json!(base64(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

fn bytes_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => json!(text),
        Err(_) => json!(base64(bytes)),
    }
}

/// Standard base64 with padding (a dozen lines rather than a dependency for one debug view).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        assert_eq!(base64(&[0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]), "3q2+7wD/");
    }
}
