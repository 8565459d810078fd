//! Errors as one line for logs and answers.

/// The error and its causes on one line, e.g. "error sending request: connection refused", with
/// any URL a library quoted redacted (it may carry a password or a token).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    super::redact::redact_urls_in(&text)
}
