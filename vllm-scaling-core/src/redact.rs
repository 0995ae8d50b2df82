//! Credentials out of text that is logged or shown: the one redaction every log line and
//! error that may carry a URL or a header goes through.

/// What stands in for a removed credential.
pub const REDACTED: &str = "<redacted>";

/// Query parameters whose values are credentials (compared without case).
const SECRET_PARAMS: [&str; 7] = ["access_token", "token", "password", "passwd", "secret", "apikey", "api_key"];

/// `text` with every credential it carries replaced by [`REDACTED`]:
///
/// * the user information of URLs (`https://user:pass@host/` becomes
///   `https://<redacted>@host/`);
/// * the credential after an HTTP authorization scheme (`Bearer abc`, `Basic dXM6cHc=`);
/// * the values of credential query parameters (`?access_token=...`, `&password=...`).
///
/// ```
/// use vllm_scaling_core::redact_credentials;
/// assert_eq!(
///     redact_credentials("GET http://me:hunter2@prom:9090/api?token=abc&x=1 failed"),
///     "GET http://<redacted>@prom:9090/api?token=<redacted>&x=1 failed"
/// );
/// assert_eq!(redact_credentials("Authorization: Bearer eyJhbGciOi"), "Authorization: Bearer <redacted>");
/// ```
#[must_use]
pub fn redact_credentials(text: &str) -> String {
    let text = redact_userinfo(text);
    let text = redact_schemes(&text);
    redact_params(&text)
}

/// Ends a URL's authority, a header's credential or a parameter's value.
fn ends_token(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | '(' | ')' | '[' | ']' | '{' | '}' | ',' | ';')
}

fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(|c: char| ends_token(c) || matches!(c, '/' | '?' | '#')).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn redact_schemes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = ["Bearer ", "Basic "]
            .iter()
            .filter_map(|scheme| {
                rest.match_indices(scheme)
                    .find(|(i, _)| *i == 0 || !rest[..*i].ends_with(|c: char| c.is_ascii_alphanumeric()))
                    .map(|(i, s)| (i, s.len()))
            })
            .min();
        let Some((i, len)) = next else { break };
        out.push_str(&rest[..i + len]);
        let tail = &rest[i + len..];
        let start = tail.len() - tail.trim_start_matches(' ').len();
        let end = tail[start..].find(ends_token).map_or(tail.len(), |e| start + e);
        out.push_str(&tail[..start]);
        if end > start {
            out.push_str(REDACTED);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn redact_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let (head, tail) = rest.split_at(eq);
        let name_start = head
            .char_indices()
            .rev()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let name = &head[name_start..];
        out.push_str(head);
        out.push('=');
        let value = &tail[1..];
        let end = value.find(|c: char| ends_token(c) || c == '&' || c == '#').unwrap_or(value.len());
        if end > 0 && SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name)) {
            out.push_str(REDACTED);
            rest = &value[end..];
        } else {
            rest = value;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_headers_and_parameters() {
        for (text, want) in [
            ("http://prom:9090", "http://prom:9090"),
            ("https://u:p@prom:9090/api", "https://<redacted>@prom:9090/api"),
            ("url (http://user@host/x)", "url (http://<redacted>@host/x)"),
            ("a https://u:p@h b http://v:q@i/ c", "a https://<redacted>@h b http://<redacted>@i/ c"),
            ("http://h/p?q=a@b", "http://h/p?q=a@b"),
            ("http://u:p%40x@h", "http://<redacted>@h"),
            ("\"http://u:p@h\"", "\"http://<redacted>@h\""),
            ("Authorization: Bearer abc.def", "Authorization: Bearer <redacted>"),
            ("Basic dXM6cHc=, then", "Basic <redacted>, then"),
            ("a basic question", "a basic question"),
            ("NotBearer x", "NotBearer x"),
            ("http://h/api?access_token=abc&query=up", "http://h/api?access_token=<redacted>&query=up"),
            ("?Password=x#frag", "?Password=<redacted>#frag"),
            ("token=", "token="),
            ("query=sum(x) threshold=5", "query=sum(x) threshold=5"),
            ("", ""),
        ] {
            assert_eq!(redact_credentials(text), want, "{text}");
        }
    }

    #[test]
    fn non_ascii_text_is_safe() {
        for text in ["é://ü:ö@ß", "Bearer é", "tökén=1", "://", "Bearer ", "=", "@://@"] {
            let _ = redact_credentials(text);
        }
        assert_eq!(redact_credentials("Bearer héllo wörld"), "Bearer <redacted> wörld");
    }
}
