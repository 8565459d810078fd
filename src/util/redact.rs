//! Showing URLs and HTTP headers without the credentials they may carry.
//!
//! A webhook, Redis or Nomad URL can hold a password in its user-info or a token in its query
//! (`https://h/hook?token=…`). Everything that prints a URL — logs, errors, `/status`, CLI output —
//! goes through these functions: they keep scheme, host, port and path, and replace user-info,
//! query and fragment with `***`. Headers shown (the delivery log) keep their names and hide the
//! values of signatures, credentials and cookies.

use url::Url;

/// What replaces a hidden part.
pub const HIDDEN: &str = "***";

/// Whether a header's value must not be shown: signatures (`x-e2b-signature`, `e2b-signature`,
/// `webhook-signature`; a signature's `…-version` is shown), credentials and cookies.
pub fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let named = matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    );
    let secret_word = [
        "signature",
        "secret",
        "token",
        "password",
        "api-key",
        "apikey",
    ]
    .iter()
    .any(|word| name.contains(word));
    named || (secret_word && !name.ends_with("-version"))
}

/// `url` as it may be shown: `https://***@host:8443/path?***`.
pub fn redact_url(url: &Url) -> String {
    let mut shown = format!("{}://", url.scheme());
    if !url.username().is_empty() || url.password().is_some() {
        shown.push_str(HIDDEN);
        shown.push('@');
    }
    if let Some(host) = url.host_str() {
        shown.push_str(host);
    }
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    if url.query().is_some() {
        shown.push('?');
        shown.push_str(HIDDEN);
    }
    if url.fragment().is_some() {
        shown.push('#');
        shown.push_str(HIDDEN);
    }
    shown
}

/// Like [`redact_url`] for text that may not even parse as a URL (e.g. a rejected setting).
pub fn redact_url_text(raw: &str) -> String {
    let raw = raw.trim();
    if let Ok(url) = Url::parse(raw)
        && raw.contains("://")
    {
        return redact_url(&url);
    }
    // Unparsable: hide everything that could be user-info, query or fragment. Anything before the
    // last `@` of the part ahead of `?`/`#` may be a password (even one holding a `/`).
    let (scheme, rest) = raw.split_once("://").unwrap_or(("", raw));
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let (before, after) = rest.split_at(end);
    let mut shown = String::new();
    if !scheme.is_empty() {
        shown.push_str(scheme);
        shown.push_str("://");
    }
    match before.rfind('@') {
        Some(at) => {
            shown.push_str(HIDDEN);
            shown.push_str(&before[at..]);
        }
        None => shown.push_str(before),
    }
    if let Some(mark) = after.chars().next() {
        shown.push(mark);
        shown.push_str(HIDDEN);
    }
    shown
}

/// `text` with every `scheme://…` in it redacted, for error messages from libraries that quote
/// the URL they were given (reqwest: `error sending request for url (http://u:p@h/?token=…)`).
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let scheme_start = rest[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let token_len = rest[sep..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(rest.len() - sep);
        let token = &rest[scheme_start..sep + token_len];
        // Punctuation that closes the surrounding sentence is not part of the URL.
        let trimmed = token.trim_end_matches([')', ',', '.', ';', ':', '!', ']']);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&redact_url_text(trimmed));
        out.push_str(&token[trimmed.len()..]);
        rest = &rest[sep + token_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_host_port_and_path_hides_user_info_query_and_fragment() {
        let url =
            Url::parse("https://user:pa55@hooks.example.com:8443/a/b?token=t0k&x=1#frag").unwrap();
        assert_eq!(
            redact_url(&url),
            "https://***@hooks.example.com:8443/a/b?***#***"
        );
        let plain = Url::parse("http://127.0.0.1:3000/hook").unwrap();
        assert_eq!(redact_url(&plain), "http://127.0.0.1:3000/hook");
        let redis = Url::parse("rediss://:secret@redis.internal:6380/2").unwrap();
        assert_eq!(redact_url(&redis), "rediss://***@redis.internal:6380/2");
        let socket = Url::parse("unix:///secrets/api.sock").unwrap();
        assert_eq!(redact_url(&socket), "unix:///secrets/api.sock");
    }

    #[test]
    fn signature_and_credential_headers_are_secret_the_rest_is_not() {
        for secret in [
            "x-e2b-signature",
            "E2B-Signature",
            "webhook-signature",
            "Authorization",
            "proxy-authorization",
            "cookie",
            "set-cookie",
            "x-api-key",
            "x-auth-token",
            "x-webhook-secret",
        ] {
            assert!(is_secret_header(secret), "{secret}");
        }
        for shown in [
            "content-type",
            "user-agent",
            "e2b-delivery-id",
            "e2b-delivery-attempt",
            "e2b-webhook-id",
            "e2b-signature-version",
            "webhook-id",
            "webhook-timestamp",
        ] {
            assert!(!is_secret_header(shown), "{shown}");
        }
    }

    #[test]
    fn unparsable_text_is_redacted_conservatively() {
        assert_eq!(
            redact_url_text("http://u:p@[bad/x?token=1"),
            "http://***@[bad/x?***"
        );
        assert_eq!(redact_url_text("http://u:p/w@h/x"), "http://***@h/x");
        assert_eq!(redact_url_text("not a url?token=zz"), "not a url?***");
        assert_eq!(redact_url_text(" https://h/x?t=1 "), "https://h/x?***");
    }

    #[test]
    fn urls_inside_text_are_redacted_and_the_rest_kept() {
        let text = "error sending request for url (http://u:pw@127.0.0.1:9/hook?token=abc): \
                    connection refused; also redis://:pw@r:6379/0, done";
        let shown = redact_urls_in(text);
        assert_eq!(
            shown,
            "error sending request for url (http://***@127.0.0.1:9/hook?***): \
             connection refused; also redis://***@r:6379/0, done"
        );
        for secret in ["pw", "abc"] {
            assert!(!shown.contains(secret), "{secret} left in {shown}");
        }
        assert_eq!(redact_urls_in("no url here"), "no url here");
        assert_eq!(redact_urls_in("\"https://h/p?q=1\""), "\"https://h/p?***\"");
    }
}
