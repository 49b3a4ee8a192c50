//! [`redact`]: connection strings without their passwords, for messages and logs.
//!
//! A password may hold any character, raw or percent-encoded, so where it ends is not
//! always clear: `postgres://u:p?x@h/db` is a password `p?x` to a reader and an invalid port
//! to a URL parser. Every reading is covered at once: everything from the first `:` after
//! the scheme to the last `@` (the user part's password, whatever it holds), and everything
//! after a `password=` parameter to the end of the string (the parameter, even when a raw
//! `&` or `#` would end it early). What that hides too much of is only hidden, never shown.

use std::ops::Range;

/// The placeholder for a connection string that is not a URL.
const NOT_A_URL: &str = "(a connection string that is not a URL)";

/// The parameters sqlx 0.8 reads from a PostgreSQL URL; any other is logged by sqlx with
/// its value (see [`unknown_after_password`]).
const KNOWN_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// `url` with its password replaced by `***`, for messages and logs: the password of the
/// user part (whatever characters it holds, up to the last `@`) and the value of a
/// `password` query parameter (to the end of the string: a raw `&` in it must not show
/// the rest). A string that is not a URL (a `key=value` connection string, say) is not
/// echoed at all.
///
/// ```
/// use flext_store_postgres::redact;
///
/// assert_eq!(redact("postgres://app:s3cret@db:5432/orders"), "postgres://app:***@db:5432/orders");
/// assert_eq!(redact("postgres://app:s3?c@ret@db/orders"), "postgres://app:***@db/orders");
/// assert_eq!(
///     redact("postgres://app@db/orders?sslmode=require&password=s3cret"),
///     "postgres://app@db/orders?sslmode=require&password=***"
/// );
/// assert_eq!(
///     redact("postgres://app@db/orders?password=s3&c=ret&sslmode=require"),
///     "postgres://app@db/orders?password=***"
/// );
/// assert_eq!(redact("host=db password=s3cret"), "(a connection string that is not a URL)");
/// ```
pub fn redact(url: &str) -> String {
    let Some(secrets) = secret_ranges(url) else {
        return NOT_A_URL.to_owned();
    };
    let mut out = String::with_capacity(url.len());
    let mut shown = 0;
    for secret in secrets {
        out.push_str(&url[shown..secret.start]);
        out.push_str("***");
        shown = secret.end;
    }
    out.push_str(&url[shown..]);
    out
}

/// Whether `url` holds anything [`redact`] hides (or is not a URL at all, so that all of
/// it may be secret): then no text derived from it by someone else (a parser's error) is
/// shown.
pub(crate) fn has_secrets(url: &str) -> bool {
    secret_ranges(url).is_none_or(|secrets| !secrets.is_empty())
}

/// `text` with every secret of `url` (as [`redact`] finds them) replaced by `***`, for
/// messages built from another library's errors about `url`.
pub(crate) fn scrub(text: &str, url: &str) -> String {
    let Some(secrets) = secret_ranges(url) else {
        return text.replace(url, NOT_A_URL);
    };
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(&url[secret.clone()], "***")
    })
}

/// Whether a query parameter after `password=` is one sqlx does not know. sqlx logs such
/// a parameter with its value, and after `password=` it is most likely the rest of a
/// password holding a raw `&`, so the store refuses the URL before sqlx sees it.
pub(crate) fn unknown_after_password(url: &str) -> bool {
    let Some(rest) = url.split_once("://").map(|(_, rest)| rest) else {
        return false;
    };
    let Some(query) = rest.split_once('?').map(|(_, query)| query) else {
        return false;
    };
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .skip_while(|param| !is_password(param))
        .skip(1)
        .any(|param| {
            let key = decode(param.split('=').next().unwrap_or_default());
            !(KNOWN_PARAMETERS.contains(&key.as_str()) || key.starts_with("options["))
        })
}

/// The byte ranges of `url` that may hold a password, sorted and disjoint; `None` when
/// `url` is not a URL.
fn secret_ranges(url: &str) -> Option<Vec<Range<usize>>> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let mut ranges = Vec::new();
    // The user part's password: from the first `:` to the last `@`, which covers every
    // `@`, `?`, `/` or `#` a raw password may hold.
    if let (Some(colon), Some(at)) = (rest.find(':'), rest.rfind('@'))
        && colon < at
    {
        ranges.push(start + colon + 1..start + at);
    }
    // A `password` parameter: its value to the end. Every `?` and `&` may start one, also
    // inside the user part (its own password may hold them).
    let parameter = rest
        .char_indices()
        .filter(|&(_, c)| c == '?' || c == '&')
        .map(|(i, _)| i + 1)
        .find(|&i| is_password(&rest[i..]));
    if let Some(i) = parameter {
        let value = rest[i..].find('=').map_or(0, |eq| eq + 1);
        ranges.push(start + i + value..url.len());
    }
    ranges.retain(|range| !range.is_empty());
    ranges.sort_by_key(|range| range.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    Some(merged)
}

/// Whether the query text `param` starts with a `password=` parameter; its key is compared
/// percent-decoded and without regard to case, as a URL parser might read it.
fn is_password(param: &str) -> bool {
    let Some((key, _)) = param.split_once('=') else {
        return false;
    };
    !key.contains('&') && decode(key).eq_ignore_ascii_case("password")
}

/// `text` percent-decoded (`+` as a space), as a query key is read; bad escapes are kept.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        let escaped = match bytes.get(i + 1..i + 3) {
            Some(&[high, low]) if bytes[i] == b'%' => hex(high).zip(hex(low)),
            _ => None,
        };
        match (escaped, bytes[i]) {
            // Two hex digits are at most 255.
            (Some((high, low)), _) => {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'%'));
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
