//! Keeps secrets out of responses: passwords in connection strings and `key=value` settings.

use std::borrow::Cow;

use serde_json::Value;

/// Setting names whose values are secrets in `key=value` text (`password=…` in a libpq
/// connection string, `token=…` in a URL query), compared without case.
const SECRET_KEYS: [&str; 5] = ["password", "passwd", "pwd", "token", "secret"];

/// What a secret is replaced with.
const MASK: &str = "***";

/// `text` with the password of every `scheme://user:password@host` URL and the value of
/// every `password=…`, `passwd=…`, `pwd=…`, `token=…` and `secret=…` setting (any case, `=`
/// or `:`) replaced by `***`.
///
/// ```
/// use flext_admin::redact;
///
/// assert_eq!(
///     redact("connect to postgres://app:s3cret@db:5432/orders failed"),
///     "connect to postgres://app:***@db:5432/orders failed"
/// );
/// assert_eq!(redact("host=db password=s3cret user=app"), "host=db password=*** user=app");
/// assert_eq!(redact("nothing to hide"), "nothing to hide");
/// ```
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    if text.contains("://") {
        out = Cow::Owned(redact_urls(&out));
    }
    let lower = out.to_ascii_lowercase();
    if SECRET_KEYS.iter().any(|key| lower.contains(key)) {
        out = Cow::Owned(redact_settings(&out));
    }
    match out {
        Cow::Owned(owned) if owned == text => Cow::Borrowed(text),
        other => other,
    }
}

/// Every string in `value` (object keys included) passed through [`redact`].
pub(crate) fn redact_json(value: &mut Value) {
    match value {
        Value::String(text) => {
            if let Cow::Owned(clean) = redact(text) {
                *text = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        Value::Object(map) => {
            let dirty: Vec<String> = map
                .keys()
                .filter(|key| matches!(redact(key), Cow::Owned(_)))
                .cloned()
                .collect();
            for key in dirty {
                if let Some(inner) = map.remove(&key) {
                    map.insert(redact(&key).into_owned(), inner);
                }
            }
            map.values_mut().for_each(redact_json);
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let (before, after) = rest.split_at(start + 3);
        out.push_str(before);
        // The authority ends at the first '/', '?', '#' or whitespace.
        let end = after
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str(MASK);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn redact_settings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        let found = SECRET_KEYS
            .iter()
            .filter_map(|key| {
                let mut from = 0;
                while let Some(at) = lower[from..].find(key).map(|i| i + from) {
                    let after = at + key.len();
                    let boundary = at == 0 || !lower.as_bytes()[at - 1].is_ascii_alphanumeric();
                    let value_at = lower[after..]
                        .find(|c: char| c != ' ')
                        .map(|i| after + i)
                        .filter(|i| matches!(lower.as_bytes()[*i], b'=' | b':'));
                    if let (true, Some(sign)) = (boundary, value_at) {
                        return Some((at, sign + 1));
                    }
                    from = after;
                }
                None
            })
            .min();
        let Some((_, value_start)) = found else {
            out.push_str(rest);
            return out;
        };
        let value = &rest[value_start..];
        let skipped = value.len() - value.trim_start().len();
        let value = value.trim_start();
        let (len, quoted) = match value.chars().next() {
            Some(q @ ('\'' | '"')) => (value[1..].find(q).map_or(value.len(), |i| i + 2), true),
            _ => (
                value
                    .find(|c: char| c.is_whitespace() || matches!(c, '&' | ';' | ',' | '"'))
                    .unwrap_or(value.len()),
                false,
            ),
        };
        out.push_str(&rest[..value_start + skipped]);
        if len > 0 {
            out.push_str(if quoted { "'***'" } else { MASK });
        }
        rest = &value[len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_only() {
        let cases = [
            ("postgres://u:p@h/db", "postgres://u:***@h/db"),
            ("nats://tok@h:4222", "nats://tok@h:4222"),
            (
                "a postgres://u:p@h b redis://:pw@r:6379/0",
                "a postgres://u:***@h b redis://:***@r:6379/0",
            ),
            ("http://h/path?x=1", "http://h/path?x=1"),
            ("amqp://u:p:q@h", "amqp://u:***@h"),
            ("no scheme u:p@h", "no scheme u:p@h"),
            ("tail ://", "tail ://"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
        }
    }

    #[test]
    fn settings_lose_their_secret_values() {
        let cases = [
            ("host=h password=p user=u", "host=h password=*** user=u"),
            ("PASSWORD = p;Host=h", "PASSWORD = ***;Host=h"),
            ("password='a b' user=u", "password='***' user=u"),
            ("https://h/?token=abc&x=1", "https://h/?token=***&x=1"),
            ("\"secret\":\"x\"", "\"secret\":\"x\""),
            ("api_secret: x y", "api_secret: *** y"),
            ("secret: x y", "secret: *** y"),
            ("passwords are fine", "passwords are fine"),
            ("password=", "password="),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
        }
    }

    #[test]
    fn json_strings_and_keys_are_redacted() {
        let mut value = serde_json::json!({
            "url": "postgres://u:p@h/db",
            "list": ["password=x", 1, null],
            "postgres://u:k@h": {"nested": "pwd=1"}
        });
        redact_json(&mut value);
        assert_eq!(
            value,
            serde_json::json!({
                "url": "postgres://u:***@h/db",
                "list": ["password=***", 1, null],
                "postgres://u:***@h": {"nested": "pwd=***"}
            })
        );
    }
}
