//! Allocations per `EventBus::publish`, counted by a global allocator that wraps the
//! system one. A test binary of its own: the allocator counts every allocation of the
//! process, so nothing else may run beside the one test.

use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;

use flext_cqrs::EventBus;
use flext_protocols::Event;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

/// The system allocator, counting what passes through it.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

struct Tick(u64);

impl Event for Tick {
    fn event_name(&self) -> &str {
        "Tick"
    }
}

const PUBLISHES: usize = 200;

/// Allocations (reallocations included) of `PUBLISHES` publishes of a `Tick` to
/// `subscribers` subscribers, synchronous ones when `sync`, after a first publish that
/// sets up what a bus keeps (counters, tracing's callsites).
fn allocations(rt: &tokio::runtime::Runtime, subscribers: usize, sync: bool) -> usize {
    let bus = EventBus::new();
    for _ in 0..subscribers {
        if sync {
            bus.subscribe_sync_fn("Tick", |tick: &Arc<Tick>| {
                black_box(tick.0);
                Ok(())
            });
        } else {
            bus.subscribe_fn("Tick", |tick: Arc<Tick>| async move {
                black_box(tick.0);
                Ok(())
            });
        }
    }
    rt.block_on(async {
        assert_eq!(bus.publish(Tick(0)).await.delivered, subscribers);
        let region = Region::new(GLOBAL);
        for i in 0..PUBLISHES {
            let report = bus.publish(Tick(i as u64)).await;
            black_box(report.delivered);
        }
        let change = region.change();
        change.allocations + change.reallocations
    })
}

#[test]
fn a_publish_to_synchronous_subscribers_allocates_the_same_whatever_their_number() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let sync: Vec<usize> = [1, 10, 100]
        .into_iter()
        .map(|n| allocations(&rt, n, true))
        .collect();
    assert_eq!(
        sync, [sync[0]; 3],
        "allocations of {PUBLISHES} publishes to 1, 10 and 100 synchronous subscribers"
    );
    // The shared event (`Arc<E>`) and the report's event name.
    assert_eq!(sync[0], 2 * PUBLISHES, "allocations per publish");

    // An async subscriber's delivery is a boxed future: one allocation each.
    let one = allocations(&rt, 1, false);
    let ten = allocations(&rt, 10, false);
    assert_eq!(
        ten - one,
        9 * PUBLISHES,
        "one more allocation per async subscriber"
    );
}
