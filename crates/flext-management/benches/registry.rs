//! Registry lookup by name and execution by name (JSON in, JSON out), and the manager's
//! execution by name with and without configured retries (none needed: each call succeeds).
//!
//! Run with `cargo bench -p flext-management --bench registry`. The registry holds 1000
//! handlers; every lookup finds its handler.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use flext_impl::{BasicHandler, Identity};
use flext_management::{HandlerManager, HandlerRegistry, HandlerSpec};
use serde_json::{Value, json};

fn registry(c: &mut Criterion) {
    let registry = HandlerRegistry::new();
    let names: Vec<String> = (0..1000).map(|i| format!("handler_{i}")).collect();
    for name in &names {
        registry
            .register(name, BasicHandler::<Identity<Value>>::new(name.clone()))
            .expect("unique names");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");

    let mut group = c.benchmark_group("registry");
    group.bench_function("lookup_by_name", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % names.len();
            black_box(registry.handler(black_box(&names[i])).is_ok())
        })
    });
    group.bench_function("execute_by_name", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for n in 0..iters {
                    let name = &names[(n % 1000) as usize];
                    black_box(registry.execute(name, json!(n)).await.ok());
                }
                started.elapsed()
            })
        })
    });
    for (label, retries) in [
        ("manager_execute_by_name_max_retries_0", 0),
        ("manager_execute_by_name_max_retries_3", 3),
    ] {
        let manager = HandlerManager::new();
        manager
            .register_ecosystem(vec![
                HandlerSpec::basic("echo").with_config(json!({"max_retries": retries})),
            ])
            .expect("a valid ecosystem");
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for n in 0..iters {
                        black_box(manager.execute("echo", json!({"n": n})).await.ok());
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, registry);
criterion_main!(benches);
