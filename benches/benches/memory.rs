//! Memory: heap bytes and allocations per `send` and per `publish`, counted by a global
//! allocator that wraps the system one, and the memory an in-memory event store takes to
//! hold 1 million events.
//!
//! Run with `cargo bench -p flext-benches --bench memory`. Not a criterion benchmark: the
//! counts are exact, so each case runs a fixed number of operations once. The results are
//! printed and written as JSON to `target/flext-memory.json`, where
//! `cargo run -p xtask -- bench-report` reads them.

#![allow(
    missing_docs,
    reason = "a benchmark binary, not an API; kept like the criterion ones"
)]
#![allow(
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "allocator counts of one process fit in i64"
)]

use std::alloc::System;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use flext_cqrs::{CommandBus, EventBus, InMemoryEventStore};
use flext_impl::handler_fn;
use flext_protocols::{Command, Event, EventStore, Handler};
use flext_types::{ExpectedVersion, JsonPayload, NewEvent};
use serde::Serialize;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

/// The system allocator, counting what passes through it.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// `(allocations, bytes allocated)` so far; a reallocation counts as one allocation of
/// the bytes it grew by (`stats_alloc` adds that growth to `bytes_allocated`).
fn allocated() -> (u64, u64) {
    let stats = GLOBAL.stats();
    (
        (stats.allocations + stats.reallocations) as u64,
        stats.bytes_allocated as u64,
    )
}

/// Heap bytes allocated and not yet freed.
fn live_bytes() -> i64 {
    let stats = GLOBAL.stats();
    stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
}

/// Allocations and bytes of one operation, averaged over many.
#[derive(Debug, Serialize)]
struct PerOperation {
    operations: u64,
    allocations_per_op: f64,
    bytes_per_op: f64,
}

/// What holding a million events costs.
#[derive(Debug, Serialize)]
struct StoreFootprint {
    events: u64,
    streams: u64,
    /// The payloads' JSON text, all events together.
    payload_bytes: u64,
    /// Heap bytes still allocated after the appends, minus before.
    heap_bytes: u64,
    /// Resident set size after the appends, minus before (from `/proc/self/status`).
    rss_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Report {
    direct_call: PerOperation,
    send: PerOperation,
    publish_10: PerOperation,
    /// `publish` to 1, 10 and 100 synchronous subscribers: the same allocations each.
    publish_sync_1: PerOperation,
    publish_sync_10: PerOperation,
    publish_sync_100: PerOperation,
    tokio_broadcast_10: PerOperation,
    in_memory_store: StoreFootprint,
}

struct Ping(u64);

impl Command for Ping {
    type Output = u64;
}

#[derive(Clone)]
struct Tick(u64);

impl Event for Tick {
    fn event_name(&self) -> &str {
        "Tick"
    }
}

const OPERATIONS: u64 = 100_000;

/// Runs `step` `OPERATIONS` times after a warm-up and averages what it allocated.
fn per_operation<F, Fut>(rt: &tokio::runtime::Runtime, mut step: F) -> PerOperation
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    rt.block_on(async {
        for i in 0..1_000 {
            step(i).await;
        }
        let (allocations, bytes) = allocated();
        for i in 0..OPERATIONS {
            step(i).await;
        }
        let (allocations_after, bytes_after) = allocated();
        PerOperation {
            operations: OPERATIONS,
            allocations_per_op: (allocations_after - allocations) as f64 / OPERATIONS as f64,
            bytes_per_op: (bytes_after - bytes) as f64 / OPERATIONS as f64,
        }
    })
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn store_footprint(rt: &tokio::runtime::Runtime) -> StoreFootprint {
    const STREAMS: u64 = 1_000;
    const PER_STREAM: u64 = 1_000;
    #[derive(Serialize)]
    struct Deposited {
        amount: u64,
    }
    let (heap, rss) = (live_bytes(), resident_bytes());
    let store = InMemoryEventStore::new();
    let mut payload_bytes = 0;
    rt.block_on(async {
        for stream in 0..STREAMS {
            // Each event its own payload, as in real use (a clone would share one).
            let events: Vec<NewEvent> = (0..PER_STREAM)
                .map(|i| {
                    let amount = stream * PER_STREAM + i;
                    let payload = JsonPayload::encode(&Deposited { amount }).expect("a payload");
                    payload_bytes += payload.as_str().len() as u64;
                    NewEvent::new("Deposited", payload)
                })
                .collect();
            store
                .append(
                    &format!("Account-{stream}"),
                    ExpectedVersion::NoStream,
                    events,
                )
                .await
                .expect("an append");
        }
    });
    let footprint = StoreFootprint {
        events: STREAMS * PER_STREAM,
        streams: STREAMS,
        payload_bytes,
        heap_bytes: (live_bytes() - heap).max(0) as u64,
        rss_bytes: resident_bytes()
            .zip(rss)
            .map(|(after, before)| after.saturating_sub(before)),
    };
    drop(black_box(store));
    footprint
}

/// `target/flext-memory.json`, next to criterion's results: this binary runs from
/// `target/<profile>/deps/`.
fn report_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.ancestors().nth(3)?.join("flext-memory.json"))
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");

    let handler = Arc::new(handler_fn("ping", |Ping(n): Ping| async move { Ok(n + 1) }));
    let direct_call = per_operation(&rt, |i| {
        let handler = &handler;
        async move {
            black_box(handler.handle(Ping(i)).await.ok());
        }
    });
    let mut bus = CommandBus::new();
    bus.register(handler.clone()).expect("one handler");
    let send = per_operation(&rt, |i| {
        let bus = &bus;
        async move {
            black_box(bus.send(Ping(i)).await.ok());
        }
    });

    let events = EventBus::new();
    for _ in 0..10 {
        events.subscribe_fn("Tick", |tick: Arc<Tick>| async move {
            black_box(tick.0);
            Ok(())
        });
    }
    let publish_10 = per_operation(&rt, |i| {
        let events = &events;
        async move {
            black_box(events.publish(Tick(i)).await.delivered);
        }
    });
    let publish_sync = |subscribers: usize| {
        let events = EventBus::new();
        for _ in 0..subscribers {
            events.subscribe_sync_fn("Tick", |tick: &Arc<Tick>| {
                black_box(tick.0);
                Ok(())
            });
        }
        per_operation(&rt, |i| {
            let events = &events;
            async move {
                black_box(events.publish(Tick(i)).await.delivered);
            }
        })
    };
    let (publish_sync_1, publish_sync_10, publish_sync_100) =
        (publish_sync(1), publish_sync(10), publish_sync(100));
    let (sender, _) = tokio::sync::broadcast::channel::<Arc<Tick>>(16);
    let receivers =
        std::cell::RefCell::new((0..10).map(|_| sender.subscribe()).collect::<Vec<_>>());
    let tokio_broadcast_10 = per_operation(&rt, |i| {
        let (sender, receivers) = (&sender, &receivers);
        async move {
            black_box(sender.send(Arc::new(Tick(i))).ok());
            // Out of the cell while awaiting, back in after (moving a `Vec` allocates nothing).
            let mut taken = receivers.take();
            for receiver in taken.iter_mut() {
                black_box(receiver.recv().await.ok().map(|tick| tick.0));
            }
            *receivers.borrow_mut() = taken;
        }
    });

    let report = Report {
        direct_call,
        send,
        publish_10,
        publish_sync_1,
        publish_sync_10,
        publish_sync_100,
        tokio_broadcast_10,
        in_memory_store: store_footprint(&rt),
    };
    let json = serde_json::to_string_pretty(&report).expect("the report serializes");
    println!("{json}");
    match report_path() {
        Some(path) => match std::fs::write(&path, &json) {
            Ok(()) => eprintln!("wrote {}", path.display()),
            Err(error) => eprintln!("cannot write {}: {error}", path.display()),
        },
        None => eprintln!("cannot find the target directory from this binary's path"),
    }
}
