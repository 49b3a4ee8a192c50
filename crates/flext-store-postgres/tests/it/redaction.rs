//! Passwords never shown: `redact` for every URL form, the errors of connecting, the
//! options' `Debug` and what sqlx logs; and a server that refuses connections failing fast.
//! None of these tests needs a server.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use flext_constants::ErrorCode;
use flext_store_postgres::{PostgresEventStore, PostgresStoreOptions, redact};
use proptest::prelude::*;

#[test]
fn redact_hides_a_password_holding_reserved_characters() {
    for (url, redacted) in [
        (
            "postgres://app:s3?cret@db:5432/orders",
            "postgres://app:***@db:5432/orders",
        ),
        (
            "postgresql://app:s3@c#r/e:t?@db/orders?sslmode=require",
            "postgresql://app:***@db/orders?sslmode=require",
        ),
        (
            "postgres://app:s3%3Fcr%40et@db/orders",
            "postgres://app:***@db/orders",
        ),
        (
            "postgres://app@db/orders?sslmode=require&password=s3&cret",
            "postgres://app@db/orders?sslmode=require&password=***",
        ),
        (
            "postgres://app@db/orders?PASSWORD=s3cret&sslmode=require",
            "postgres://app@db/orders?PASSWORD=***",
        ),
        (
            "postgres://app@db/orders?pass%77ord=s3cret",
            "postgres://app@db/orders?pass%77ord=***",
        ),
        (
            "postgres://db:5432/orders?password=s3@cret",
            "postgres://db:***",
        ),
        ("postgres://app@db/orders", "postgres://app@db/orders"),
        ("postgres://app:@db/orders", "postgres://app:@db/orders"),
    ] {
        assert_eq!(redact(url), redacted, "{url}");
    }
}

#[tokio::test]
async fn a_url_that_does_not_parse_is_not_echoed_with_its_password() {
    // A raw `?` ends the URL's authority early: the parser sees a bad port.
    let url = "postgres://app:s3?cret@127.0.0.1:1/orders";
    let error = PostgresEventStore::connect(url).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::StorageError);
    let message = error.to_string();
    assert!(!message.contains("s3?cret"), "{message}");
    assert!(message.contains("the URL does not parse"), "{message}");
    assert!(
        message.contains("postgres://app:***@127.0.0.1:1/orders"),
        "{message}"
    );
    // sqlx's reason may quote a value that is part of the password (the parameter runs
    // to the end of the URL): it is not shown.
    let error =
        PostgresEventStore::connect("postgres://app@127.0.0.1:1/orders?password=s3&sslmode=cret")
            .await
            .unwrap_err();
    assert!(error.to_string().contains("does not parse"), "{error}");
    assert!(!error.to_string().contains("cret"), "{error}");
    // A URL without a password keeps the parser's reason.
    let error = PostgresEventStore::connect("postgres://app@127.0.0.1:99999/orders")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("invalid port"), "{error}");
}

#[test]
fn a_password_parameter_holding_a_raw_ampersand_is_refused_before_sqlx_logs_it() {
    let (result, logs) = logged(|| {
        PostgresEventStore::connect("postgres://app@127.0.0.1:1/orders?password=s3&cret")
    });
    let error = result.unwrap_err();
    assert_eq!(error.code(), ErrorCode::StorageError);
    assert!(error.to_string().contains("%26"), "{error}");
    assert!(!error.to_string().contains("cret"), "{error}");
    assert!(!logs.contains("cret"), "{logs}");
    // Parameters sqlx knows may follow the password.
    let (result, _) = logged(|| {
        PostgresEventStore::connect(
            "postgres://app@127.0.0.1:1/orders?password=s3cret&sslmode=disable",
        )
    });
    let error = result.unwrap_err();
    assert!(error.to_string().contains("refused"), "{error}");
}

#[test]
fn the_log_recorder_sees_what_sqlx_logs() {
    let (_, logs) =
        logged(|| PostgresEventStore::connect("postgres://app@127.0.0.1:1/orders?unheard_of=7"));
    assert!(logs.contains("unheard_of"), "{logs}");
}

#[tokio::test]
async fn a_server_that_refuses_connections_fails_fast_naming_host_and_port() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    // The default connect timeout (5 s): a refusal must not wait for it.
    let options = PostgresStoreOptions::new(format!("postgres://app:s3cret@127.0.0.1:{port}/db"));
    let started = Instant::now();
    let error = PostgresEventStore::connect_with(options).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(2),
        "gave up after {elapsed:?}"
    );
    assert_eq!(error.code(), ErrorCode::StorageError);
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "the server at 127.0.0.1:{port} refused the connection"
        )),
        "{message}"
    );
    assert!(!message.contains("timed out"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
    assert!(!format!("{error:?}").contains("s3cret"), "{error:?}");
}

/// The URL forms a password `{p}` (raw) or `{e}` (percent-encoded) is put in; nothing
/// listens on port 1.
const FORMS: &[&str] = &[
    "postgres://app:{p}@127.0.0.1:1/db",
    "postgresql://app:{p}@127.0.0.1:1/db",
    "postgres://app:{e}@127.0.0.1:1/db",
    "postgres://app:{p}@127.0.0.1:1/db?sslmode=disable",
    "postgres://app@127.0.0.1:1/db?password={p}",
    "postgres://app@127.0.0.1:1/db?password={e}",
    "postgres://app@127.0.0.1:1/db?sslmode=disable&password={p}",
    "postgres://app@127.0.0.1:1/db?password={p}&sslmode=disable",
    "postgresql://127.0.0.1:1/db?user=app&password={p}",
    "host=127.0.0.1 port=1 user=app password={p}",
    "host=127.0.0.1 port=1 user=app password='{p}'",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn no_password_is_shown_in_any_form(
        tail in "[a-z0-9?@#/:&%=+ ]{1,12}",
        form in 0..FORMS.len(),
    ) {
        // The `Pw` start keeps a password from being a piece of a message by chance.
        let password = format!("Pw{tail}");
        let encoded: String = password
            .bytes()
            .fold(String::new(), |mut out, b| {
                let _ = write!(out, "%{b:02X}");
                out
            });
        let url = FORMS[form].replace("{p}", &password).replace("{e}", &encoded);
        let shown = redact(&url);
        prop_assert!(!shown.contains(&password), "redact({url}) = {shown}");
        let options = PostgresStoreOptions::new(url.clone())
            .with_connect_timeout(Duration::from_millis(500));
        let debug = format!("{options:?}");
        prop_assert!(!debug.contains(&password), "{debug}");
        let (result, logs) = logged(|| PostgresEventStore::connect_with(options));
        let error = result.expect_err("nothing listens on port 1");
        for text in [error.to_string(), format!("{error:?}"), logs] {
            prop_assert!(!text.contains(&password), "{url}: {text}");
            prop_assert!(!text.contains(&encoded), "{url}: {text}");
        }
    }
}

/// Runs `connect` on a runtime of its own with a subscriber recording every event's
/// fields, and returns its result with the record.
fn logged<F, T>(connect: impl FnOnce() -> F) -> (T, String)
where
    F: Future<Output = T>,
{
    let record = Arc::new(Mutex::new(String::new()));
    let subscriber = Recorder(record.clone());
    // With a single live dispatcher, tracing caches a callsite's interest from the default
    // of whichever thread hits it first: another test's thread, without a subscriber, would
    // cache "never" for an event this one must see. A second dispatcher kept alive makes
    // tracing ask every live subscriber instead.
    static KEEP_ALIVE: OnceLock<tracing::Dispatch> = OnceLock::new();
    KEEP_ALIVE.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    let result = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(connect())
    });
    let logs = record.lock().unwrap().clone();
    (result, logs)
}

/// A subscriber that writes every event's and span's fields into a string.
struct Recorder(Arc<Mutex<String>>);

impl tracing::field::Visit for Recorder {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = writeln!(self.0.lock().unwrap(), "{}={value:?}", field.name());
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        span.record(&mut Recorder(self.0.clone()));
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        values.record(&mut Recorder(self.0.clone()));
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let _ = write!(self.0.lock().unwrap(), "{}: ", event.metadata().target());
        event.record(&mut Recorder(self.0.clone()));
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}
