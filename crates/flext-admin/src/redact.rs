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
            for (key, inner) in map.iter_mut() {
                let lower = key.to_ascii_lowercase();
                let secret = SECRET_KEYS.iter().any(|k| lower.contains(k));
                if secret && matches!(inner, Value::String(_) | Value::Number(_)) {
                    *inner = Value::String(MASK.to_owned());
                } else {
                    redact_json(inner);
                }
            }
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
                    // A user alone is often a token (`nats://TOKEN@host`).
                    None if userinfo.is_empty() => {}
                    None => out.push_str(MASK),
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
    while let Some(value_start) = next_secret_value(rest) {
        let value = &rest[value_start..];
        let (len, quote) = match value.chars().next() {
            Some(q @ ('\'' | '"')) => (value[1..].find(q).map_or(value.len(), |i| i + 2), Some(q)),
            _ => (
                value
                    .find(|c: char| {
                        c.is_whitespace() || matches!(c, '&' | ';' | ',' | '"' | '\'' | '}')
                    })
                    .unwrap_or(value.len()),
                None,
            ),
        };
        out.push_str(&rest[..value_start]);
        match quote {
            Some(q) => {
                out.push(q);
                out.push_str(MASK);
                out.push(q);
            }
            None if len > 0 => out.push_str(MASK),
            None => {}
        }
        rest = &value[len..];
    }
    out.push_str(rest);
    out
}

/// Where the value of the first secret setting in `text` starts: after a secret key (in any
/// case, anywhere in a word: `sslpassword`, `api_secret`), an optional closing quote
/// (`"password": …` in JSON text), spaces, `=` or `:`, and spaces.
fn next_secret_value(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    SECRET_KEYS
        .iter()
        .filter_map(|key| {
            lower.match_indices(key).find_map(|(at, _)| {
                let mut i = at + key.len();
                if matches!(bytes.get(i), Some(b'"' | b'\'')) {
                    i += 1;
                }
                while bytes.get(i) == Some(&b' ') {
                    i += 1;
                }
                if !matches!(bytes.get(i), Some(b'=' | b':')) {
                    return None;
                }
                i += 1;
                while bytes.get(i) == Some(&b' ') {
                    i += 1;
                }
                // `://` is a URL's scheme separator, not a setting (`token://…` is odd but
                // `redact_urls` has dealt with it).
                (!lower[i..].starts_with("//")).then_some(i)
            })
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_only() {
        let cases = [
            ("postgres://u:p@h/db", "postgres://u:***@h/db"),
            ("nats://tok@h:4222", "nats://***@h:4222"),
            ("http://@h/", "http://@h/"),
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
            ("label{token=\"a b\"} 1", "label{token=\"***\"} 1"),
            ("https://h/?token=abc&x=1", "https://h/?token=***&x=1"),
            ("{\"secret\":\"x\",\"a\":1}", "{\"secret\":\"***\",\"a\":1}"),
            ("sslpassword=p host=h", "sslpassword=*** host=h"),
            ("token://odd", "token://odd"),
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
    fn clean_text_is_borrowed_not_copied() {
        for clean in ["nothing to hide", "http://h/p", "passwords are fine"] {
            assert!(matches!(redact(clean), Cow::Borrowed(_)), "{clean}");
        }
        assert!(matches!(redact("password=x"), Cow::Owned(_)));
    }

    #[test]
    fn json_strings_and_keys_are_redacted() {
        let mut value = serde_json::json!({
            "data": {"password": "hunter2", "api_token": 42, "tokens": ["a"], "name": "n"},
            "url": "postgres://u:p@h/db",
            "list": ["password=x", 1, null],
            "postgres://u:k@h": {"nested": "pwd=1"}
        });
        redact_json(&mut value);
        assert_eq!(
            value,
            serde_json::json!({
                "data": {"password": "***", "api_token": "***", "tokens": ["a"], "name": "n"},
                "url": "postgres://u:***@h/db",
                "list": ["password=***", 1, null],
                "postgres://u:***@h": {"nested": "pwd=***"}
            })
        );
    }
}
