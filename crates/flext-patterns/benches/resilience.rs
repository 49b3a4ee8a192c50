//! Per-call overhead of a closed circuit breaker, of a retry that does not retry, and of a
//! bulkhead, each against the bare handler.
//!
//! Run with `cargo bench -p flext-patterns --bench resilience`. The overhead is a case's
//! median minus `resilience/bare_handler`'s.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use flext_impl::handler_fn;
use flext_patterns::{Bulkhead, CircuitBreaker, CircuitBreakerConfig, Retry, RetryConfig};
use flext_protocols::Handler;
use tokio::runtime::Runtime;

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

fn resilience(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let handler = handler_fn("add", |x: u64| async move { Ok(x + 1) });
    let breaker = CircuitBreaker::new("bench", CircuitBreakerConfig::default()).expect("config");
    let retry = Retry::new(RetryConfig::default()).expect("config");
    let bulkhead = Bulkhead::new("bench", 64, Duration::ZERO).expect("config");

    let mut group = c.benchmark_group("resilience");
    group.bench_function("bare_handler", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, |i| {
                let handler = &handler;
                async move {
                    black_box(handler.handle(black_box(i)).await.ok());
                }
            })
        })
    });
    group.bench_function("circuit_breaker_closed", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, |i| {
                let (handler, breaker) = (&handler, &breaker);
                async move {
                    black_box(breaker.call(handler.handle(black_box(i))).await.ok());
                }
            })
        })
    });
    group.bench_function("retry_no_failure", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, |i| {
                let (handler, retry) = (&handler, &retry);
                async move {
                    black_box(retry.run(|_| handler.handle(black_box(i))).await.ok());
                }
            })
        })
    });
    group.bench_function("bulkhead", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, |i| {
                let (handler, bulkhead) = (&handler, &bulkhead);
                async move {
                    black_box(bulkhead.call(handler.handle(black_box(i))).await.ok());
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, resilience);
criterion_main!(benches);
