//! A flext handler under four tower layers, side by side with the same stack over a bare
//! tower service.
//!
//! Run with `cargo bench -p flext-tower --bench tower`.
//!
//! Both stacks are `ServiceBuilder::new().map_request(x + 1).timeout(30 s)
//! .concurrency_limit(64).map_response(x + 1)`, called in a loop with `ready().call()` on
//! one current-thread runtime:
//!
//! - `tower/flext_handler_service`: over `handler_fn(|x| async move { Ok(x + 1) })` served
//!   through `HandlerExt::into_service` (owned: an `Arc` clone and two boxes a call, the
//!   handler's and the `'static` future's);
//! - `tower/flext_handler_service_ref`: over the same handler served borrowed, through
//!   `HandlerExt::as_service` (the handler's box only);
//! - `tower/bare_service_fn`: over `service_fn(|x| async move { Ok(x + 1) })`.
//!
//! And the other way round, for reference: `tower/flext_tower_layered_handle` calls the
//! same layers put on the handler with `HandlerExt::layer` through `Handler::handle`, as a
//! bus route does (its own boxed future and the lock around readiness and the call, on
//! top of the owned service).

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use flext_impl::handler_fn;
use flext_protocols::Handler;
use flext_tower::HandlerExt;
use flext_types::FlextError;
use tokio::runtime::Runtime;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

fn timed<S>(rt: &Runtime, service: &mut S, iters: u64) -> Duration
where
    S: Service<u64, Response = u64, Error = BoxError>,
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

fn four_layers(c: &mut Criterion) {
    let rt = runtime();
    let handler = handler_fn("add", |x: u64| async move { Ok(x + 1) });
    // Built inside the runtime, as a server builds its stack (the concurrency limit's
    // semaphore and the timeout's sleep do not need it to be made).
    let (mut owned, mut borrowed, mut bare) = rt.block_on(async {
        let owned = ServiceBuilder::new()
            .map_request(|x: u64| x + 1)
            .timeout(Duration::from_secs(30))
            .concurrency_limit(64)
            .map_response(|x: u64| x + 1)
            .service(handler_fn("add", |x: u64| async move { Ok(x + 1) }).into_service());
        let borrowed = ServiceBuilder::new()
            .map_request(|x: u64| x + 1)
            .timeout(Duration::from_secs(30))
            .concurrency_limit(64)
            .map_response(|x: u64| x + 1)
            .service(handler.as_service());
        let bare = ServiceBuilder::new()
            .map_request(|x: u64| x + 1)
            .timeout(Duration::from_secs(30))
            .concurrency_limit(64)
            .map_response(|x: u64| x + 1)
            .service(service_fn(
                |x: u64| async move { Ok::<_, FlextError>(x + 1) },
            ));
        (owned, borrowed, bare)
    });

    let layered = rt.block_on(async {
        handler_fn("add", |x: u64| async move { Ok(x + 1) }).layer(
            ServiceBuilder::new()
                .map_request(|x: u64| x + 1)
                .timeout(Duration::from_secs(30))
                .concurrency_limit(64)
                .map_response(|x: u64| x + 1),
        )
    });

    let mut group = c.benchmark_group("tower");
    group.bench_function("flext_handler_service", |b| {
        b.iter_custom(|iters| timed(&rt, &mut owned, iters))
    });
    group.bench_function("flext_handler_service_ref", |b| {
        b.iter_custom(|iters| timed(&rt, &mut borrowed, iters))
    });
    group.bench_function("bare_service_fn", |b| {
        b.iter_custom(|iters| timed(&rt, &mut bare, iters))
    });
    group.bench_function("flext_tower_layered_handle", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for i in 0..iters {
                    black_box(layered.handle(black_box(i)).await.ok());
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, four_layers);
criterion_main!(benches);
