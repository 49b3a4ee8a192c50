//! Dispatch cost of the buses against the nearest baselines.
//!
//! Run with `cargo bench -p flext-cqrs --bench dispatch`.
//!
//! - `send/direct_call` calls the handler object itself; `send/command_bus` sends through a
//!   bus holding that same object (lookup, validation, span, metrics, panic guard);
//!   `send/command_bus_uninstrumented` is that bus with metrics and tracing off
//!   ([`Instrumentation::NONE`]), so the two bus cases differ by what instrumentation costs
//!   (no tracing subscriber is installed).
//! - `send/command_bus_deadline_core` sends through a bus with a `TimeoutMiddleware` to a
//!   `BasicHandler` with a deadline of its own: the two nested deadlines of a dispatch.
//! - `publish/event_bus/*` publishes to N async subscribers that do nothing (each delivery
//!   a boxed future); `publish/event_bus_sync/*` to N synchronous ones
//!   (`subscribe_sync_fn`: no future, no allocation per delivery);
//!   `publish/tokio_broadcast/*` sends one value through a tokio broadcast channel and
//!   receives it on N receivers.
//!
//! Every case runs on one current-thread runtime and times a whole loop, so the runtime's
//! own cost is the same on both sides.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use flext_cqrs::{CommandBus, EventBus, Instrumentation, TimeoutMiddleware};
use flext_impl::{BasicHandler, handler_fn};
use flext_protocols::{Command, Event, Handler};
use tokio::runtime::Runtime;

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

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

/// Times `iters` runs of `step` on `rt`.
fn timed<F, Fut>(rt: &Runtime, iters: u64, mut step: F) -> Duration
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    rt.block_on(async {
        let started = Instant::now();
        for i in 0..iters {
            step(i).await;
        }
        started.elapsed()
    })
}

fn send(c: &mut Criterion) {
    let rt = runtime();
    let handler = Arc::new(handler_fn("ping", |Ping(n): Ping| async move { Ok(n + 1) }));
    let mut bus = CommandBus::new();
    bus.register(handler.clone()).expect("one handler");
    let mut bare = CommandBus::new().with_instrumentation(Instrumentation::NONE);
    bare.register(handler.clone()).expect("one handler");
    let mut deadlines = CommandBus::new();
    deadlines
        .register(BasicHandler::from_fn("ping", |Ping(n): Ping| async move {
            Ok(n + 1)
        }))
        .expect("one handler");
    deadlines.add_middleware(TimeoutMiddleware::new(Duration::from_secs(30)));

    let mut group = c.benchmark_group("send");
    group.bench_function("direct_call", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, |i| {
                let handler = &handler;
                async move {
                    black_box(handler.handle(Ping(black_box(i))).await.ok());
                }
            })
        })
    });
    group.bench_function("command_bus", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, |i| {
                let bus = &bus;
                async move {
                    black_box(bus.send(Ping(black_box(i))).await.ok());
                }
            })
        })
    });
    group.bench_function("command_bus_uninstrumented", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, |i| {
                let bare = &bare;
                async move {
                    black_box(bare.send(Ping(black_box(i))).await.ok());
                }
            })
        })
    });
    group.bench_function("command_bus_deadline_core", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, |i| {
                let deadlines = &deadlines;
                async move {
                    black_box(deadlines.send(Ping(black_box(i))).await.ok());
                }
            })
        })
    });
    group.finish();
}

fn publish(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("publish");
    for subscribers in [1usize, 10, 100] {
        let bus = EventBus::new();
        for _ in 0..subscribers {
            bus.subscribe_fn("Tick", |tick: Arc<Tick>| async move {
                black_box(tick.0);
                Ok(())
            });
        }
        group.bench_with_input(
            BenchmarkId::new("event_bus", subscribers),
            &subscribers,
            |b, _| {
                b.iter_custom(|iters| {
                    timed(&rt, iters, |i| {
                        let bus = &bus;
                        async move {
                            black_box(bus.publish(Tick(i)).await.delivered);
                        }
                    })
                })
            },
        );

        let sync_bus = EventBus::new();
        for _ in 0..subscribers {
            sync_bus.subscribe_sync_fn("Tick", |tick: &Arc<Tick>| {
                black_box(tick.0);
                Ok(())
            });
        }
        group.bench_with_input(
            BenchmarkId::new("event_bus_sync", subscribers),
            &subscribers,
            |b, _| {
                b.iter_custom(|iters| {
                    timed(&rt, iters, |i| {
                        let bus = &sync_bus;
                        async move {
                            black_box(bus.publish(Tick(i)).await.delivered);
                        }
                    })
                })
            },
        );

        let (sender, _) = tokio::sync::broadcast::channel::<Arc<Tick>>(16);
        let mut receivers: Vec<_> = (0..subscribers).map(|_| sender.subscribe()).collect();
        group.bench_with_input(
            BenchmarkId::new("tokio_broadcast", subscribers),
            &subscribers,
            |b, _| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let started = Instant::now();
                        for i in 0..iters {
                            black_box(sender.send(Arc::new(Tick(i))).ok());
                            for receiver in receivers.iter_mut() {
                                black_box(receiver.recv().await.ok().map(|tick| tick.0));
                            }
                        }
                        started.elapsed()
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, send, publish);
criterion_main!(benches);
