//! What a provider's 4xx answer says: its message in a person's words, and whether it is about an input (only the
//! jobs whose chunks it carried are at fault) or about the request's settings (every request gets it alike).
//!
//! Providers word their errors differently, so the body is read in the shapes OpenAI-compatible servers use
//! (OpenAI and vLLM `{"error": {"message", "param", "code"}}`, text-embeddings-inference and Ollama
//! `{"error": "..."}`, FastAPI servers `{"detail": "..." | [{"loc": [...], "msg": "..."}]}`), falling back to the
//! text itself. A refusal is judged from what it names, most reliable first: the parameter at fault, the error
//! code, then words of the message. What names neither is [`Judgement::Unclear`]: the pool then asks the provider
//! to embed a harmless input before blaming the job (`pool.rs`), so a misread message never dead-letters a backlog.

use serde_json::Value;

/// Whom a refusal blames, as far as its words tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// The inputs: too long, refused by a content policy, too many in one request.
    Input,
    /// The request's settings or credentials: a parameter other than the input, the model, the encoding, the key.
    Provider,
    /// The words name neither.
    Unclear,
}

/// The readable part of an error body and the parameter it names, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// The provider's message (the whole body when it is not one of the known shapes).
    pub message: String,
    /// The request field at fault (`param`, or the last part of a FastAPI `loc`).
    pub param: Option<String>,
    /// A machine-readable code (`code`, `type` or `error_type`), when there is one.
    pub code: Option<String>,
}

/// Reads an error body. Whitespace runs become one space, so a message fits on one log line.
pub fn read_error_body(body: &str) -> ErrorBody {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let mut read = ErrorBody { message: String::new(), param: None, code: None };
    match parsed.as_ref() {
        Some(Value::Object(top)) => {
            let error = top.get("error");
            let inner = error.and_then(Value::as_object).unwrap_or(top);
            read.message = inner
                .get("message")
                .and_then(text)
                .or_else(|| error.and_then(text))
                .or_else(|| top.get("detail").and_then(text))
                .or_else(|| top.get("message").and_then(text))
                .unwrap_or_default();
            read.param = inner.get("param").and_then(text);
            read.code = ["code", "type", "error_type"]
                .iter()
                .find_map(|key| inner.get(*key).and_then(text).or_else(|| top.get(*key).and_then(text)));
            // FastAPI: `detail` is a list of {loc, msg}; the first names the field.
            if let Some(first) = top.get("detail").and_then(Value::as_array).and_then(|list| list.first()) {
                read.message = first.get("msg").and_then(text).unwrap_or_default();
                read.param = first
                    .get("loc")
                    .and_then(Value::as_array)
                    .and_then(|loc| loc.iter().rev().find_map(Value::as_str))
                    .map(str::to_owned);
            }
        }
        Some(Value::String(message)) => read.message = message.clone(),
        _ => {}
    }
    if read.message.trim().is_empty() {
        read.message = body.to_owned();
    }
    read.message = read.message.split_whitespace().collect::<Vec<_>>().join(" ");
    read
}

/// Words that put a refusal on the input: its length, its tokens, a content policy.
const INPUT_WORDS: &[&str] = &[
    "input",
    "context length",
    "too long",
    "too large",
    "too many",
    // Plural: limits are counted in tokens; "invalid token" (a credential) names no input.
    "tokens",
    "length",
    "exceed",
    "content",
    "policy",
    "flagged",
    "safety",
    "prompt",
    "batch size",
];

/// Words that put a refusal on the request's settings or credentials.
const PROVIDER_WORDS: &[&str] = &[
    "encoding_format",
    "encoding format",
    "base64",
    "dimensions",
    "model",
    "api key",
    "api_key",
    "apikey",
    "unauthori",
    "authenticat",
    "permission",
    "credential",
    "not supported",
    "unsupported",
    "unknown field",
    "unknown variant",
    "deployment",
    "quota",
    "billing",
];

/// Judges a 400 or 422 from what it names.
pub fn judge(body: &ErrorBody) -> Judgement {
    if let Some(param) = body.param.as_deref().map(str::to_ascii_lowercase) {
        return if param == "input" || param.starts_with("input") || param.starts_with("$.input") {
            Judgement::Input
        } else {
            Judgement::Provider
        };
    }
    let code = body.code.as_deref().unwrap_or_default().to_ascii_lowercase();
    if ["model_not_found", "invalid_api_key", "invalid_model", "unsupported_value", "insufficient_quota"]
        .contains(&code.as_str())
    {
        return Judgement::Provider;
    }
    if ["context_length_exceeded", "content_filter", "content_policy_violation", "tokenizer", "validation"]
        .contains(&code.as_str())
    {
        return Judgement::Input;
    }
    let message = body.message.to_ascii_lowercase();
    // Input words first: "This model's maximum context length is ..." is about the input, though it says model.
    if INPUT_WORDS.iter().any(|word| message.contains(word)) {
        Judgement::Input
    } else if PROVIDER_WORDS.iter().any(|word| message.contains(word)) {
        Judgement::Provider
    } else {
        Judgement::Unclear
    }
}

/// Whether a refusal is about the `base64` encoding: it names `encoding_format` or `base64`.
pub fn refuses_base64(body: &ErrorBody) -> bool {
    let named = |text: &str| {
        let text = text.to_ascii_lowercase();
        text.contains("encoding_format") || text.contains("encoding format") || text.contains("base64")
    };
    body.param.as_deref().is_some_and(named) || named(&body.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(body: &str) -> Judgement {
        judge(&read_error_body(body))
    }

    #[test]
    fn the_message_is_read_from_each_known_shape() {
        let openai = r#"{"error":{"message":"Incorrect API key provided: sk-***","type":"invalid_request_error",
            "param":null,"code":"invalid_api_key"}}"#;
        let read = read_error_body(openai);
        assert_eq!(read.message, "Incorrect API key provided: sk-***");
        assert_eq!((read.param, read.code.as_deref()), (None, Some("invalid_api_key")));
        assert_eq!(
            read_error_body(r#"{"error":"Input validation error","error_type":"Validation"}"#).message,
            "Input validation error"
        );
        let fastapi = r#"{"detail":[{"loc":["body","encoding_format"],"msg":"Input should be 'float'","type":"x"}]}"#;
        let read = read_error_body(fastapi);
        assert_eq!(
            (read.message.as_str(), read.param.as_deref()),
            ("Input should be 'float'", Some("encoding_format"))
        );
        assert_eq!(read_error_body(r#"{"detail":"Not Found"}"#).message, "Not Found");
        assert_eq!(
            read_error_body("<html>\n  <h1>Bad   Request</h1>\n</html>").message,
            "<html> <h1>Bad Request</h1> </html>"
        );
    }

    /// Which 400s blame the provider's settings and which the input, as real servers word them.
    #[test]
    fn refusals_about_a_parameter_blame_the_provider_and_refusals_about_an_input_blame_the_input() {
        use Judgement::*;
        let cases = [
            // A parameter other than the input is named: every request gets it.
            (r#"{"error":{"message":"Invalid value","param":"dimensions","code":null}}"#, Provider),
            (r#"{"error":{"message":"Unsupported value","param":"encoding_format"}}"#, Provider),
            (r#"{"detail":[{"loc":["body","model"],"msg":"field required"}]}"#, Provider),
            (
                r#"{"error":{"message":"The model `text-embedding-4` does not exist","code":"model_not_found"}}"#,
                Provider,
            ),
            (r#"{"error":"Model \"nomic\" not found, try pulling it first"}"#, Provider),
            (r#"encoding_format "base64" is not supported; use "float""#, Provider),
            (r#"{"error":{"message":"You exceeded your current quota","code":"insufficient_quota"}}"#, Provider),
            // The input is named, or its size, or a content policy.
            (r#"{"error":{"message":"'$.input' is invalid.","param":"input"}}"#, Input),
            (
                r#"{"error":{"message":"This model's maximum context length is 8192 tokens, however you requested 9000 tokens"}}"#,
                Input,
            ),
            (
                r#"{"error":"Input validation error: `inputs` must have less than 512 tokens. Given: 600","error_type":"Validation"}"#,
                Input,
            ),
            (r#"{"error":{"message":"input 3 was refused by the content policy."}}"#, Input),
            (r#"{"error":{"message":"The prompt was filtered","code":"content_filter"}}"#, Input),
            (r#"{"error":{"message":"'input' has 40 items, more than the maximum of 32 per request."}}"#, Input),
            // Neither: the pool asks the provider with a harmless input.
            (r#"{"error":{"message":"Bad Request"}}"#, Unclear),
            (r#"{"error":"invalid token"}"#, Unclear),
            ("<html><body>400 Bad Request</body></html>", Unclear),
        ];
        for (body, expected) in cases {
            assert_eq!(judged(body), expected, "{body}");
        }
    }

    #[test]
    fn a_base64_refusal_names_the_encoding() {
        for body in [
            r#"{"error":{"message":"encoding_format \"base64\" is not supported; use \"float\""}}"#,
            r#"{"detail":[{"loc":["body","encoding_format"],"msg":"Input should be 'float'"}]}"#,
            "base64 output is not available",
        ] {
            assert!(refuses_base64(&read_error_body(body)), "{body}");
        }
        assert!(!refuses_base64(&read_error_body(r#"{"error":{"message":"input too long"}}"#)));
    }
}
