//! A chain of 4 trivial handlers, and a handler under 4 middleware, each side by side with
//! the same stack built with tower's `ServiceBuilder`.
//!
//! Run with `cargo bench -p flext-benches --bench patterns`.
//!
//! - `chain/flext_handler_chain`: a sequential `HandlerChain` of four `x + 1` handlers;
//!   `chain/tower_service_builder`: three `map_request(x + 1)` layers over a `service_fn`
//!   doing `x + 1`.
//! - `middleware/flext_layered`: a `x + 1` handler under four `HookMiddleware`, each adding
//!   1 before and after; `middleware/tower_service_builder`: four `map_request` and four
//!   `map_response` layers over the same `service_fn`.
//!
//! Each case times a loop on one current-thread runtime.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use flext_impl::handler_fn;
use flext_patterns::{HandlerChain, HookMiddleware, Layered};
use flext_protocols::Handler;
use tokio::runtime::Runtime;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
}

fn timed_flext<H>(rt: &Runtime, handler: &H, iters: u64) -> Duration
where
    H: Handler<Request = u64, Response = u64>,
{
    rt.block_on(async {
        let started = Instant::now();
        for i in 0..iters {
            black_box(handler.handle(black_box(i)).await.ok());
        }
        started.elapsed()
    })
}

fn timed_tower<S>(rt: &Runtime, service: &mut S, iters: u64) -> Duration
where
    S: Service<u64, Response = u64, Error = Infallible>,
{
    rt.block_on(async {
        let started = Instant::now();
        for i in 0..iters {
            let ready = service.ready().await.expect("ready");
            black_box(ready.call(black_box(i)).await.ok());
        }
        started.elapsed()
    })
}

fn chain(c: &mut Criterion) {
    let rt = runtime();
    let mut flext = HandlerChain::new("four");
    for n in 0..4 {
        flext
            .add_handler(handler_fn(
                format!("add_{n}"),
                |x: u64| async move { Ok(x + 1) },
            ))
            .expect("four handlers");
    }
    let mut tower = ServiceBuilder::new()
        .map_request(|x: u64| x + 1)
        .map_request(|x: u64| x + 1)
        .map_request(|x: u64| x + 1)
        .service(service_fn(
            |x: u64| async move { Ok::<_, Infallible>(x + 1) },
        ));

    let mut group = c.benchmark_group("chain");
    group.bench_function("flext_handler_chain", |b| {
        b.iter_custom(|iters| timed_flext(&rt, &flext, iters))
    });
    group.bench_function("tower_service_builder", |b| {
        b.iter_custom(|iters| timed_tower(&rt, &mut tower, iters))
    });
    group.finish();
}

fn middleware(c: &mut Criterion) {
    let rt = runtime();
    let mut flext = Layered::new(handler_fn("add", |x: u64| async move { Ok(x + 1) }));
    for n in 0..4 {
        flext.push(
            HookMiddleware::new(format!("m{n}"))
                .before_request(|x: u64| Ok(x + 1))
                .after_response(|x: u64| Ok(x + 1)),
        );
    }
    let mut tower = ServiceBuilder::new()
        .map_request(|x: u64| x + 1)
        .map_response(|x: u64| x + 1)
        .map_request(|x: u64| x + 1)
        .map_response(|x: u64| x + 1)
        .map_request(|x: u64| x + 1)
        .map_response(|x: u64| x + 1)
        .map_request(|x: u64| x + 1)
        .map_response(|x: u64| x + 1)
        .service(service_fn(
            |x: u64| async move { Ok::<_, Infallible>(x + 1) },
        ));

    let mut group = c.benchmark_group("middleware");
    group.bench_function("flext_layered", |b| {
        b.iter_custom(|iters| timed_flext(&rt, &flext, iters))
    });
    group.bench_function("tower_service_builder", |b| {
        b.iter_custom(|iters| timed_tower(&rt, &mut tower, iters))
    });
    group.finish();
}

criterion_group!(benches, chain, middleware);
criterion_main!(benches);
