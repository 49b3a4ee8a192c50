//! How `send` cost grows with the number of command types a bus has handlers for.
//!
//! Run with `cargo bench -p flext-cqrs --bench growth`. `dispatch_growth/command_bus/N`
//! sends the same command through a bus holding handlers for N distinct command types
//! (1, 100 and 1000: `Cmd<0>` … `Cmd<999>`, each its own type, so each its own route).
//! A route is found by hashing the command's `TypeId`, so the cost should not depend on N.
//! (Each type compiles its own copy of the registration and dispatch path: 10 000 types
//! took over a quarter of an hour to compile in the bench profile here.)

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::time::Instant;

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use flext_cqrs::CommandBus;
use flext_protocols::{Command, Handler};
use flext_types::FlextResult;

/// One of 1000 distinct command types.
struct Cmd<const N: u16>(u64);

impl<const N: u16> Command for Cmd<N> {
    type Output = u64;
}

/// The handler of `Cmd<N>`: a plain handler object, the least code per type, since each of
/// the 1000 types compiles its own copy of the registration and dispatch path.
struct Increment<const N: u16>;

#[async_trait]
impl<const N: u16> Handler for Increment<N> {
    type Request = Cmd<N>;
    type Response = u64;

    fn handler_name(&self) -> &str {
        "increment"
    }

    async fn handle(&self, Cmd(n): Cmd<N>) -> FlextResult<u64> {
        Ok(n + 1)
    }
}

/// Registers the handler of `Cmd<N>` when `N` is below `count`.
#[inline(never)]
fn register<const N: u16>(bus: &mut CommandBus, count: u16) {
    if N < count {
        bus.register(Increment::<N>)
            .expect("distinct command types");
    }
}

// `Cmd<0>` … `Cmd<999>`, one digit per macro level.
macro_rules! register_units {
    ($bus:ident, $count:ident, $a:literal, $b:literal, $c:literal) => {
        register_units!(@ $bus, $count, $a, $b, $c; 0 1 2 3 4 5 6 7 8 9);
    };
    (@ $bus:ident, $count:ident, $a:literal, $b:literal, $c:literal; $($d:literal)*) => {
        $( register::<{ $a * 1000 + $b * 100 + $c * 10 + $d }>($bus, $count); )*
    };
}

macro_rules! register_tens {
    ($bus:ident, $count:ident, $a:literal, $b:literal) => {
        register_tens!(@ $bus, $count, $a, $b; 0 1 2 3 4 5 6 7 8 9);
    };
    (@ $bus:ident, $count:ident, $a:literal, $b:literal; $($c:literal)*) => {
        $( register_units!($bus, $count, $a, $b, $c); )*
    };
}

macro_rules! register_hundreds {
    ($bus:ident, $count:ident, $a:literal) => {
        register_hundreds!(@ $bus, $count, $a; 0 1 2 3 4 5 6 7 8 9);
    };
    (@ $bus:ident, $count:ident, $a:literal; $($b:literal)*) => {
        $( register_tens!($bus, $count, $a, $b); )*
    };
}

/// A bus with handlers for `Cmd<0>` … `Cmd<count - 1>`.
fn bus_with(count: u16) -> CommandBus {
    let mut bus = CommandBus::new();
    let target = &mut bus;
    register_hundreds!(target, count, 0);
    bus
}

fn dispatch_growth(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let mut group = c.benchmark_group("dispatch_growth");
    for count in [1u16, 100, 1_000] {
        let bus = bus_with(count);
        assert_eq!(bus.metrics().registered_handlers, usize::from(count));
        group.bench_with_input(BenchmarkId::new("command_bus", count), &count, |b, _| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for i in 0..iters {
                        black_box(bus.send(Cmd::<0>(black_box(i))).await.ok());
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, dispatch_growth);
criterion_main!(benches);
