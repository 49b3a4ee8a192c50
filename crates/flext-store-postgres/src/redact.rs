//! [`redact`]: connection strings without their passwords, for messages and logs.

/// `url` with its password replaced by `***`, for messages and logs: the password of the
/// user part and any `password` query parameter. A string that is not a URL is not echoed
/// at all.
///
/// ```
/// use flext_store_postgres::redact;
///
/// assert_eq!(redact("postgres://app:s3cret@db:5432/orders"), "postgres://app:***@db:5432/orders");
/// assert_eq!(
///     redact("postgres://app@db/orders?sslmode=require&password=s3cret"),
///     "postgres://app@db/orders?sslmode=require&password=***"
/// );
/// assert_eq!(redact("host=db password=s3cret"), "(a connection string that is not a URL)");
/// ```
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a connection string that is not a URL)".to_owned();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let mut out = format!("{scheme}://");
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            match credentials.split_once(':') {
                Some((user, _password)) => out.push_str(&format!("{user}:***")),
                None => out.push_str(credentials),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(rest),
    }
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}
