//! PostgreSQL specifics: hostile input, corrupt rows, checkpoints in the read model's
//! transaction, newer schemas, unreachable servers, dropped connections, wake-ups by
//! notification. (Concurrent appends and the read barrier: `appends.rs`.)

use std::time::{Duration, Instant};

use flext_constants::ErrorCode;
use flext_protocols::EventStore;
use flext_store_postgres::{PostgresEventStore, PostgresStoreOptions};
use flext_types::{ExpectedVersion, JsonPayload, NewEvent};
use futures_util::StreamExt;
use serde_json::json;

use crate::{fresh, url};

fn event(value: serde_json::Value) -> NewEvent {
    NewEvent::new("Noted", JsonPayload::encode(&value).unwrap())
}

#[tokio::test]
async fn hostile_ids_and_payloads_are_stored_and_read_back_verbatim() {
    if let Some(store) = fresh("hostile input").await {
        flext_testing::sql::hostile_input_round_trips(&store).await;
    }
}

/// A payload that is not JSON cannot be stored at all (the column is `jsonb`); a row whose
/// metadata is JSON but not event metadata is a `SERIALIZATION_ERROR` naming its
/// position, and the rows before it still read.
#[tokio::test]
async fn a_corrupt_row_is_a_serialization_error_and_a_payload_must_be_json() {
    let Some(store) = fresh("corrupt row").await else {
        return;
    };
    let appended = store
        .append(
            "s",
            ExpectedVersion::NoStream,
            vec![event(json!(1)), event(json!(2))],
        )
        .await
        .unwrap();
    let position = i64::try_from(appended.last_position).unwrap();
    let not_json = sqlx::query("UPDATE flext_events SET payload = '{broken' WHERE position = $1")
        .bind(position)
        .execute(store.pool())
        .await;
    assert!(
        not_json.is_err(),
        "a jsonb column refuses text that is not JSON"
    );
    sqlx::query("UPDATE flext_events SET metadata = '[1]' WHERE position = $1")
        .bind(position)
        .execute(store.pool())
        .await
        .unwrap();
    flext_testing::event_store::caught_up(&store, appended.last_position).await;
    let err = store.read_all(1, 10).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::SerializationError);
    assert!(
        err.message().starts_with(&format!(
            "Stored event at position {position} has malformed metadata"
        )),
        "{err}"
    );
    assert_eq!(
        store.read_all(1, 1).await.unwrap().len(),
        1,
        "the rows before it still read"
    );
}

/// Events, snapshots and dead letters keep native types: `uuid` ids, `jsonb` payloads and
/// metadata, `timestamptz` times, so SQL can query them; a payload reads back as equal
/// JSON (jsonb keeps neither key order nor spacing), and a `\u0000`, which jsonb cannot
/// keep, is an `INVALID_ARGUMENT` naming the stream. Before, every column was `TEXT`.
#[tokio::test]
async fn events_are_stored_with_native_types_and_queryable_as_json() {
    let Some(store) = fresh("native types").await else {
        return;
    };
    let written = json!({"zeta": 1, "alpha": {"b": [1, 2.50, null], "a": "é"}, "big": 18446744073709551615u64});
    let appended = store
        .append(
            "typed",
            ExpectedVersion::NoStream,
            vec![event(written.clone())],
        )
        .await
        .unwrap();
    let types: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text || '.' || column_name::text, data_type::text \
         FROM information_schema.columns WHERE table_schema = $1 \
         AND column_name IN ('event_id', 'payload', 'metadata', 'recorded_at', 'taken_at', 'letter') \
         ORDER BY 1",
    )
    .bind(store.schema())
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        types,
        [
            ("flext_dead_letters.letter", "jsonb"),
            ("flext_events.event_id", "uuid"),
            ("flext_events.metadata", "jsonb"),
            ("flext_events.payload", "jsonb"),
            ("flext_events.recorded_at", "timestamp with time zone"),
            ("flext_snapshots.payload", "jsonb"),
            ("flext_snapshots.taken_at", "timestamp with time zone"),
        ]
        .map(|(c, t)| (c.to_owned(), t.to_owned()))
    );
    let queried: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM flext_events WHERE payload @> '{\"zeta\": 1}' \
         AND payload -> 'alpha' ->> 'a' = 'é' AND recorded_at > now() - interval '1 hour'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(queried, 1, "the payload is queryable as JSON");
    let read = store.read_stream("typed", 1, 10).await.unwrap();
    assert_eq!(
        read[0].payload.decode::<serde_json::Value>().unwrap(),
        written
    );
    assert_eq!(read[0].position, appended.first_position);

    let nul = store
        .append(
            "typed",
            ExpectedVersion::Exact(1),
            vec![event(json!({"text": "a\u{0}b"}))],
        )
        .await
        .expect_err("jsonb keeps no \\u0000");
    assert_eq!(nul.code(), ErrorCode::InvalidArgument, "{nul:?}");
    assert!(nul.message().contains("typed"), "{nul}");
    assert_eq!(store.stream_version("typed").await.unwrap(), 1);
}

/// JSON that our decoder accepts but jsonb refuses — a lone surrogate escape (SQLSTATE
/// 22P02), a number beyond `numeric` (22003), a `\u0000` in the metadata (22P05) — is an
/// `INVALID_ARGUMENT` naming the stream and the cause, and nothing of the batch is
/// stored. Before, only the `\u0000` was: the others were `STORAGE_ERROR`s.
#[tokio::test]
async fn json_that_jsonb_refuses_is_an_invalid_argument_naming_the_stream() {
    let Some(store) = fresh("jsonb refusals").await else {
        return;
    };
    let payload = |text: &str| {
        NewEvent::new(
            "Noted",
            JsonPayload::from_text(text).expect("our decoder accepts it"),
        )
    };
    let mut nul_metadata = event(json!(1));
    nul_metadata
        .metadata
        .headers
        .insert("tenant".to_owned(), "a\u{0}b".to_owned());
    let cases = [
        (payload(r#"{"text":"\ud800"}"#), "lone surrogate", "22P02"),
        (
            payload(r#"{"n":1e200000}"#),
            "beyond what numeric holds",
            "22003",
        ),
        (nul_metadata, "\\u0000", "22P05"),
    ];
    for (refused, cause, code) in cases {
        let error = store
            .append(
                "refused",
                ExpectedVersion::Any,
                vec![event(json!("fine")), refused],
            )
            .await
            .expect_err("jsonb refuses it");
        assert_eq!(
            error.code(),
            ErrorCode::InvalidArgument,
            "{code}: {error:?}"
        );
        assert!(
            error.message().contains("stream refused") && error.message().contains(cause),
            "{code}: {error}"
        );
        assert_eq!(store.stream_version("refused").await.unwrap(), 0, "{code}");
    }
}

#[tokio::test]
async fn a_checkpoint_commits_or_rolls_back_with_its_read_model() {
    let Some(store) = fresh("checkpoint in transaction").await else {
        return;
    };
    let table = "CREATE TABLE balances (account TEXT PRIMARY KEY, total BIGINT NOT NULL)";
    sqlx::query(table).execute(store.pool()).await.unwrap();
    // The read model's write and the checkpoint, in one transaction of the caller's.
    let write = async |store: &PostgresEventStore, total: i64, checkpoint: u64, commit: bool| {
        let mut tx = store.pool().begin().await.unwrap();
        let upsert = "INSERT INTO balances VALUES ('a', $1) \
                      ON CONFLICT (account) DO UPDATE SET total = excluded.total";
        let done = sqlx::query(upsert).bind(total).execute(&mut *tx).await;
        done.unwrap();
        let saved = PostgresEventStore::save_checkpoint_in(&mut tx, "balances", checkpoint);
        saved.await.unwrap();
        match commit {
            true => tx.commit().await.unwrap(),
            false => tx.rollback().await.unwrap(),
        }
    };
    let total = async |store: &PostgresEventStore| -> i64 {
        let query = sqlx::query_scalar("SELECT total FROM balances");
        query.fetch_one(store.pool()).await.unwrap()
    };
    flext_testing::sql::a_checkpoint_moves_with_its_read_model(&store, write, total).await;
}

#[tokio::test]
async fn a_schema_of_a_newer_version_is_refused() {
    let Some(store) = fresh("newer schema").await else {
        return;
    };
    sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (100, 'from the future', true, '\\x00', 0)")
        .execute(store.pool())
        .await
        .unwrap();
    let options =
        PostgresStoreOptions::new(url("newer schema").unwrap()).with_schema(store.schema());
    let err = PostgresEventStore::connect_with(options).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageError);
    assert!(
        err.message().contains(
            "the database has schema version 100, newer than this flext-store-postgres knows (4)"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_its_password_in_bounded_time() {
    let options = PostgresStoreOptions::new("postgres://app:s3cret@127.0.0.1:1/orders")
        .with_connect_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let err = PostgresEventStore::connect_with(options).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up in {:?}",
        started.elapsed()
    );
    assert_eq!(err.code(), ErrorCode::StorageError);
    assert!(
        err.message()
            .contains("postgres://app:***@127.0.0.1:1/orders"),
        "{err}"
    );
    assert!(
        !err.message().contains("s3cret"),
        "the password is not in the error"
    );
    let err = PostgresEventStore::connect("not a url").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageError);
    let err = PostgresEventStore::connect_with(
        PostgresStoreOptions::new("postgres://x@127.0.0.1/db").with_schema("bad; schema"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn the_store_recovers_when_the_server_drops_its_connections() {
    let Some(url) = url("dropped connections") else {
        return;
    };
    // One pooled connection, so the one killed is the one the next append must replace.
    let options = PostgresStoreOptions::new(url.clone())
        .with_schema(format!(
            "flext_t_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        ))
        .with_max_connections(1);
    let store = PostgresEventStore::connect_with(options).await.unwrap();
    store
        .append("s", ExpectedVersion::NoStream, vec![event(json!(1))])
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let killer = sqlx::PgPool::connect(&url).await.unwrap();
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&killer)
        .await
        .unwrap();
    assert!(terminated);
    let mut recovered = false;
    for _ in 0..3 {
        if store
            .append("s", ExpectedVersion::Any, vec![event(json!(2))])
            .await
            .is_ok()
        {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "the pool replaced the dropped connection");
    assert_eq!(store.stream_version("s").await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_commit_wakes_a_subscription_through_notify_not_polling() {
    let Some(writer) = fresh("notify wake-up").await else {
        return;
    };
    // A second store on the same schema: it learns of the writer's commits only from the
    // server, and its polling is too slow to be what delivers the event.
    let options = PostgresStoreOptions::new(url("notify wake-up").unwrap())
        .with_schema(writer.schema().to_owned())
        .with_poll_interval(Duration::from_secs(3600));
    let reader = PostgresEventStore::connect_with(options).await.unwrap();
    let mut tail = reader.subscribe(1).await.unwrap();
    // The subscription reads the empty store and waits before the commit happens.
    let next = tokio::spawn(async move { tail.next().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!next.is_finished(), "nothing to deliver yet");

    let appended = writer
        .append("s", ExpectedVersion::NoStream, vec![event(json!({"n": 1}))])
        .await
        .unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(10), next)
        .await
        .expect("the notification woke the subscription")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(delivered.position, appended.first_position);
    assert_eq!(delivered.stream_id.as_ref(), "s");
}

#[test]
fn options_and_errors_never_show_a_password() {
    let options = PostgresStoreOptions::new(
        "postgres://app:s3cret@db:5432/orders?sslmode=disable&password=hunter2",
    );
    let shown = format!("{options:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("hunter2"),
        "{shown}"
    );
    assert!(shown.contains("app:***@db:5432/orders"), "{shown}");
    assert!(shown.contains("password=***"), "{shown}");
}

#[tokio::test]
async fn a_bad_connection_string_is_not_echoed() {
    let error = PostgresEventStore::connect("host=db password=s3cret")
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::StorageError);
    assert!(!error.to_string().contains("s3cret"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_one_pooled_connection_still_appends_reads_and_wakes() {
    let Some(url) = url("one connection") else {
        return;
    };
    let options = PostgresStoreOptions::new(url)
        .with_schema(format!(
            "flext_t_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        ))
        .with_max_connections(1)
        .with_connect_timeout(Duration::from_secs(3));
    let store = PostgresEventStore::connect_with(options).await.unwrap();
    // Give the notification listener time to connect: it must not take the only
    // connection of the store's pool.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tail = store.subscribe(1).await.unwrap();
    let mut positions = Vec::new();
    for n in 0..3 {
        let appended = store
            .append("s", ExpectedVersion::Any, vec![event(json!({ "n": n }))])
            .await
            .unwrap();
        positions.push(appended.first_position);
    }
    assert_eq!(store.read_stream("s", 1, 10).await.unwrap().len(), 3);
    for position in positions {
        let next = tokio::time::timeout(Duration::from_secs(5), tail.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(next.position, position);
    }
}

#[tokio::test]
async fn a_connect_timeout_of_duration_max_connects_instead_of_panicking() {
    let Some(url) = url("longest connect timeout") else {
        return;
    };
    let schema = format!(
        "flext_t_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let options = PostgresStoreOptions::new(url)
        .with_schema(schema)
        .with_connect_timeout(Duration::MAX)
        .with_poll_interval(Duration::MAX);
    let store = PostgresEventStore::connect_with(options)
        .await
        .expect("the longest connect timeout connects");
    store
        .append("s", ExpectedVersion::NoStream, vec![event(json!(1))])
        .await
        .unwrap();
    assert_eq!(store.stream_version("s").await.unwrap(), 1);
}
