//! Repository `execute` on an aggregate with 0, 100 and 1000 prior events: flext-cqrs
//! (without and with snapshots every 100 events) side by side with cqrs-es and its
//! in-memory `MemStore`, on the same aggregate shape.
//!
//! Run with `cargo bench -p flext-benches --bench repository > /dev/null`; results are in
//! `target/criterion/execute/`. (cqrs-es's `MemStore` prints two lines per command, so send
//! standard output to `/dev/null`; the cost of its writes stays in its numbers.)
//!
//! Each measured iteration gets a fresh store seeded with exactly N events (seeding is not
//! timed) and runs one command that appends one event, so every iteration loads the same
//! history cold: no cache helps either side. `execute/flext_warm` is the steady state of
//! flext's repository instead: one aggregate, commands in a row, its cache warm.
//!
//! The flext store is seeded as a repository fills it: each payload keeps its event
//! (`JsonPayload::from_value`), as cqrs-es's `MemStore` keeps typed events.
//! `flext_no_snapshots_text_payloads` seeds text-only payloads instead, as a durable store
//! reads them back: that load parses all N.
//!
//! `aggregate_load/*` times `Repository::load` with the cache off, to show how loading
//! grows (text payloads, so the first load parses them and later loads borrow what it
//! kept): `since_snapshot/N` has a snapshot at version 1000 and N events after it;
//! `with_snapshot/T` and `without_snapshot/T` hold T events in all (the snapshot, when
//! there is one, at version T - 10).

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use flext_cqrs::{InMemoryEventStore, Repository, RepositoryConfig};
use flext_protocols::{Aggregate, Event, EventStore, SnapshotStore};
use flext_types::{ExpectedVersion, FlextResult, JsonPayload, NewEvent, Snapshot};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

const HISTORIES: [usize; 3] = [0, 100, 1000];

/// The same aggregate for both frameworks: an account that takes deposits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Account {
    balance: u64,
    deposits: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { amount: u64 },
}

#[derive(Debug, Clone)]
struct Deposit(u64);

impl Event for AccountEvent {
    fn event_name(&self) -> &str {
        "Deposited"
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = Deposit;
    type Event = AccountEvent;

    fn handle(&self, Deposit(amount): Deposit) -> FlextResult<Vec<AccountEvent>> {
        Ok(vec![AccountEvent::Deposited { amount }])
    }

    fn apply(&mut self, AccountEvent::Deposited { amount }: &AccountEvent) {
        self.balance += amount;
        self.deposits += 1;
    }
}

mod cqrs_es_side {
    use super::{Account, AccountEvent, Deposit};
    use cqrs_es::event_sink::EventSink;
    use cqrs_es::{DomainEvent, EventEnvelope};

    /// cqrs-es needs an error type; this aggregate never fails.
    #[derive(Debug)]
    pub(super) struct Never;

    impl std::fmt::Display for Never {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("never")
        }
    }

    impl std::error::Error for Never {}

    impl DomainEvent for AccountEvent {
        fn event_type(&self) -> String {
            "Deposited".to_owned()
        }

        fn event_version(&self) -> String {
            "1".to_owned()
        }
    }

    impl cqrs_es::Aggregate for Account {
        const TYPE: &'static str = "Account";
        type Command = Deposit;
        type Event = AccountEvent;
        type Error = Never;
        type Services = ();

        async fn handle(
            &mut self,
            Deposit(amount): Deposit,
            _services: &(),
            sink: &EventSink<Self>,
        ) -> Result<(), Never> {
            sink.write(AccountEvent::Deposited { amount }, self).await;
            Ok(())
        }

        fn apply(&mut self, AccountEvent::Deposited { amount }: AccountEvent) {
            self.balance += amount;
            self.deposits += 1;
        }
    }

    pub(super) fn envelope(sequence: usize) -> EventEnvelope<Account> {
        EventEnvelope {
            aggregate_id: "acc".to_owned(),
            sequence,
            payload: AccountEvent::Deposited { amount: 1 },
            metadata: Default::default(),
        }
    }
}

type CqrsEs = cqrs_es::CqrsFramework<Account, cqrs_es::mem_store::MemStore<Account>>;

/// A fresh cqrs-es framework whose store holds `n` events of the account `acc`.
fn seeded_cqrs_es(n: usize) -> CqrsEs {
    let store = cqrs_es::mem_store::MemStore::<Account>::default();
    let events: Vec<_> = (1..=n).map(cqrs_es_side::envelope).collect();
    #[allow(
        deprecated,
        reason = "the only way to seed a MemStore without N commits"
    )]
    let map = store.get_events();
    map.write()
        .expect("the MemStore lock")
        .insert("acc".to_owned(), events);
    cqrs_es::CqrsFramework::new(store, Vec::new(), ())
}

/// How the seeded events' payloads are made.
#[derive(Debug, Clone, Copy)]
enum Payloads {
    /// As a repository appends them: each keeps its event (`JsonPayload::from_value`), as
    /// cqrs-es's `MemStore` keeps typed events.
    Typed,
    /// Text only, each its own (as read back from a durable store): the first load parses
    /// every one.
    Text,
}

impl Payloads {
    fn make(self) -> JsonPayload {
        let event = AccountEvent::Deposited { amount: 1 };
        match self {
            Self::Typed => JsonPayload::from_value(event),
            Self::Text => JsonPayload::encode(&event),
        }
        .expect("payload")
    }
}

/// A fresh store holding `total` events of the account `acc`, with a snapshot of the state
/// at version `snapshot_at` unless that is 0. Seeding is not timed.
fn seeded_store(
    rt: &Runtime,
    payloads: Payloads,
    total: usize,
    snapshot_at: usize,
) -> Arc<InMemoryEventStore> {
    let store = InMemoryEventStore::new();
    rt.block_on(async {
        if total > 0 {
            let events: Vec<_> = (0..total)
                .map(|_| NewEvent::new("Deposited", payloads.make()))
                .collect();
            store
                .append("Account-acc", ExpectedVersion::NoStream, events)
                .await
                .expect("seed");
        }
        if snapshot_at > 0 {
            let state = Account {
                balance: snapshot_at as u64,
                deposits: snapshot_at as u64,
            };
            let snapshot = Snapshot {
                stream_id: "Account-acc".to_owned(),
                version: snapshot_at as u64,
                schema_version: 1,
                payload: JsonPayload::encode(&state).expect("state"),
                timestamp: time::OffsetDateTime::now_utc(),
            };
            store.save_snapshot(snapshot).await.expect("snapshot");
        }
    });
    Arc::new(store)
}

/// A fresh flext store holding `n` events of the account `acc` (and, with snapshots, the
/// snapshot at the last multiple of 100), and a repository without a warm cache.
fn seeded_flext(
    rt: &Runtime,
    payloads: Payloads,
    n: usize,
    snapshots: bool,
) -> Repository<Account> {
    let snapshot_at = if snapshots { n / 100 * 100 } else { 0 };
    let shared = seeded_store(rt, payloads, n, snapshot_at);
    let events: Arc<dyn EventStore> = shared.clone();
    let repository = Repository::new(events);
    if snapshots {
        repository.with_snapshots(shared, 100)
    } else {
        repository
    }
}

fn execute(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("execute");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4));
    for n in HISTORIES {
        group.bench_with_input(BenchmarkId::new("cqrs_es_mem_store", n), &n, |b, &n| {
            b.iter_batched(
                || seeded_cqrs_es(n),
                |cqrs| {
                    rt.block_on(cqrs.execute("acc", Deposit(1)))
                        .expect("execute");
                    cqrs
                },
                BatchSize::PerIteration,
            )
        });
        for (name, payloads, snapshots) in [
            ("flext_no_snapshots", Payloads::Typed, false),
            ("flext_no_snapshots_text_payloads", Payloads::Text, false),
            ("flext_snapshots_every_100", Payloads::Typed, true),
        ] {
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                b.iter_batched(
                    || seeded_flext(&rt, payloads, n, snapshots),
                    |repository| {
                        let executed = rt
                            .block_on(repository.execute("acc", Deposit(1)))
                            .expect("execute");
                        assert_eq!(executed.version, n as u64 + 1);
                        repository
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    let warm = seeded_flext(&rt, Payloads::Typed, 1000, false)
        .with_config(RepositoryConfig::default().with_cache_capacity(16));
    group.bench_function("flext_warm", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(warm.execute("acc", Deposit(1)))
                    .expect("execute")
                    .version,
            )
        })
    });
    group.finish();
}

/// A store holding `total` events of `acc` (with a snapshot at version `snapshot_at` when
/// it is not 0), and a repository on it that never caches and never snapshots by itself.
fn seeded_for_load(rt: &Runtime, total: usize, snapshot_at: usize) -> Repository<Account> {
    let shared = seeded_store(rt, Payloads::Text, total, snapshot_at);
    let events: Arc<dyn EventStore> = shared.clone();
    let config = RepositoryConfig::default().with_cache_capacity(0);
    let repository = Repository::new(events).with_config(config);
    if snapshot_at > 0 {
        repository.with_snapshots(shared, u64::MAX)
    } else {
        repository
    }
}

fn aggregate_load(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("aggregate_load");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));
    let mut case = |name: &str, parameter: usize, total: usize, snapshot_at: usize| {
        let repository = seeded_for_load(&rt, total, snapshot_at);
        group.bench_with_input(BenchmarkId::new(name, parameter), &parameter, |b, _| {
            b.iter(|| {
                let loaded = rt.block_on(repository.load("acc")).expect("load");
                assert_eq!(loaded.version, total as u64);
                black_box(loaded.state.balance)
            })
        });
    };
    for since in [0, 10, 100, 1000] {
        case("since_snapshot", since, 1000 + since, 1000);
    }
    for total in [100, 1000, 10_000] {
        case("with_snapshot", total, total, total - 10);
        case("without_snapshot", total, total, 0);
    }
    group.finish();
}

criterion_group!(benches, execute, aggregate_load);
criterion_main!(benches);
