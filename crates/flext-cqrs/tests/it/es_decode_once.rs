//! A repository decodes each stored event at most once: what it appended is read back once
//! as it is appended and lent to later loads from the in-memory store, text read once is
//! kept, upcasting still applies, and an event its own JSON does not decode into is refused
//! before anything is stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flext_cqrs::{InMemoryEventStore, Repository, RepositoryConfig, Upcasters};
use flext_protocols::{Aggregate, Event, EventStore};
use flext_types::{ExpectedVersion, FlextResult, JsonPayload, NewEvent};
use serde::{Deserialize, Deserializer, Serialize};

/// Counts how often a `Counted` is parsed, per test (each test names its own counter).
static PARSED_LENT: AtomicUsize = AtomicUsize::new(0);
static PARSED_TEXT: AtomicUsize = AtomicUsize::new(0);
static PARSED_UPCAST: AtomicUsize = AtomicUsize::new(0);
static PARSED_OTHER: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Counted {
    amount: u64,
    counter: u8,
}

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            amount: u64,
            #[serde(default)]
            counter: u8,
        }
        let raw = Raw::deserialize(deserializer)?;
        [&PARSED_LENT, &PARSED_TEXT, &PARSED_UPCAST, &PARSED_OTHER][usize::from(raw.counter)]
            .fetch_add(1, Ordering::SeqCst);
        Ok(Self {
            amount: raw.amount,
            counter: raw.counter,
        })
    }
}

impl Event for Counted {
    fn event_name(&self) -> &str {
        "Counted"
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Tally {
    total: u64,
    events: u64,
}

impl Aggregate for Tally {
    const TYPE: &'static str = "Tally";
    type Command = (u64, u8);
    type Event = Counted;

    fn handle(&self, (amount, counter): (u64, u8)) -> FlextResult<Vec<Counted>> {
        Ok(vec![Counted { amount, counter }])
    }

    fn apply(&mut self, event: &Counted) {
        self.total += event.amount;
        self.events += 1;
    }
}

/// A store holding the stream `Tally-t`: deposits of 1 to `count`, as text payloads that
/// count their parses in the counter numbered `counter`.
async fn text_tally(count: u64, counter: u8) -> InMemoryEventStore {
    let store = InMemoryEventStore::new();
    let events = (1..=count)
        .map(|amount| {
            let text = format!(r#"{{"amount":{amount},"counter":{counter}}}"#);
            NewEvent::new("Counted", JsonPayload::from_text(text).unwrap())
        })
        .collect();
    store
        .append("Tally-t", ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    store
}

fn uncached(store: &InMemoryEventStore) -> Repository<Tally> {
    Repository::new(Arc::new(store.clone()))
        .with_config(RepositoryConfig::default().with_cache_capacity(0))
}

#[tokio::test]
async fn events_a_repository_appended_load_without_parsing() {
    let store = InMemoryEventStore::new();
    let repository = uncached(&store);
    let start = PARSED_LENT.load(Ordering::SeqCst);
    for amount in 1..=20 {
        repository.execute("t", (amount, 0)).await.unwrap();
    }
    // Each event is read back once as it is appended (and never again by the loads of
    // the later commands).
    let before = PARSED_LENT.load(Ordering::SeqCst);
    assert_eq!(before - start, 20);
    let loaded = uncached(&store).load("t").await.unwrap();
    assert_eq!(
        (loaded.version, loaded.state.total, loaded.state.events),
        (20, 210, 20)
    );
    assert_eq!(
        PARSED_LENT.load(Ordering::SeqCst),
        before,
        "the store lent the events the repository appended"
    );
    // The text is still what a durable store would keep, and it still decodes.
    let stored = store.read_stream("Tally-t", 1, 1).await.unwrap();
    assert_eq!(stored[0].payload.as_str(), r#"{"amount":1,"counter":0}"#);
}

#[tokio::test]
async fn text_payloads_are_parsed_once_per_store() {
    let store = text_tally(10, 1).await;
    let first = uncached(&store).load("t").await.unwrap();
    assert_eq!((first.version, first.state.total), (10, 55));
    assert_eq!(
        PARSED_TEXT.load(Ordering::SeqCst),
        10,
        "each event parsed once"
    );
    let again = uncached(&store).load("t").await.unwrap();
    assert_eq!((again.version, again.state.total), (10, 55));
    assert_eq!(
        PARSED_TEXT.load(Ordering::SeqCst),
        10,
        "a second load borrows what the first kept"
    );
}

#[tokio::test]
async fn old_schema_versions_are_upcast_on_every_load() {
    let store = InMemoryEventStore::new();
    // Version 0 stored the amount in cents: it parses as the current shape too, with the
    // wrong amount, so only the upcaster gets it right.
    let mut old = NewEvent::new(
        "Counted",
        JsonPayload::from_text(r#"{"amount":500,"counter":2}"#).unwrap(),
    );
    old.schema_version = 0;
    store
        .append("Tally-t", ExpectedVersion::NoStream, vec![old])
        .await
        .unwrap();
    let upcasters = Upcasters::new().register("Counted", 0, |mut value| {
        let cents = value["amount"].as_u64().unwrap_or(0);
        value["amount"] = serde_json::json!(cents / 100);
        Ok(value)
    });
    let repository = uncached(&store).with_upcasters(upcasters);
    for _ in 0..2 {
        let loaded = repository.load("t").await.unwrap();
        assert_eq!((loaded.version, loaded.state.total), (1, 5));
    }
    assert_eq!(
        PARSED_UPCAST.load(Ordering::SeqCst),
        2,
        "an upcast payload is decoded from its upcast form each time"
    );
    // The payload kept nothing of its own: decoding the text as the current type now
    // parses it (the wrong amount, which the upcaster corrects).
    let stored = store.read_stream("Tally-t", 1, 1).await.unwrap();
    assert_eq!(stored[0].payload.decoded::<Counted>().unwrap().amount, 500);
}

#[tokio::test]
async fn upcasters_of_other_versions_leave_current_payloads_parsed_once() {
    let store = text_tally(4, 3).await;
    let upcasters = Upcasters::new().register("Counted", 0, Ok);
    let repository = uncached(&store).with_upcasters(upcasters);
    for _ in 0..3 {
        assert_eq!(repository.load("t").await.unwrap().state.total, 10);
    }
    assert_eq!(
        PARSED_OTHER.load(Ordering::SeqCst),
        4,
        "schema version 1 needs no upcaster: parsed once, then lent"
    );
}

/// Serializes `amount` as `value`, but reads only `amount`: its JSON does not decode.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lopsided {
    #[serde(rename(serialize = "value"))]
    amount: u64,
}

impl Event for Lopsided {
    fn event_name(&self) -> &str {
        "Lopsided"
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Broken;

impl Aggregate for Broken {
    const TYPE: &'static str = "Broken";
    type Command = u64;
    type Event = Lopsided;

    fn handle(&self, amount: u64) -> FlextResult<Vec<Lopsided>> {
        Ok(vec![Lopsided { amount }])
    }

    fn apply(&mut self, _: &Lopsided) {}
}

#[tokio::test]
async fn an_event_its_own_json_does_not_decode_into_is_not_stored() {
    let store = InMemoryEventStore::new();
    let repository = Repository::<Broken>::new(Arc::new(store.clone()));
    let error = repository.execute("b", 5).await.unwrap_err();
    assert!(
        error.is(flext_constants::ErrorCode::SerializationError),
        "{error}"
    );
    assert!(
        error.to_string().starts_with(
            "Event Lopsided cannot be stored: it does not decode from the JSON it serializes to"
        ),
        "{error}"
    );
    assert_eq!(
        store.stream_version("Broken-b").await.unwrap(),
        0,
        "nothing stored"
    );
}
