//! The stores' throughput benchmarks, written once (feature `bench`): single appends,
//! 8 concurrent writers (and 1 to 16, in [`writers`]) and batches of 100, each beside the
//! baselines a store compares against, and stream and read-all reads. Every store runs the
//! same [`workload`](crate::workload) under the same benchmark ids, so their figures
//! compare like with like.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use flext_protocols::EventStore;
use tokio::runtime::Runtime;

use crate::workload;

/// Concurrent writers in `single_8_writers`.
pub const WRITERS: u64 = 8;
/// Events per append in `batch_100`.
pub const BATCH: u64 = 100;
/// Events of the stream `stream_1000` reads.
pub const STREAM_LEN: u64 = 1_000;
/// Events in the store `all_10000_pages_of_1000` reads.
pub const READ_ALL_EVENTS: u64 = 10_000;

/// A boxed insert of a baseline.
pub type Insert =
    Arc<dyn Fn(String, u64, u64) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What a store's appends are compared with: `insert(stream, version, count)` writes
/// `count` benchmark events to `stream` after `version` in one call. Each of its benchmarks
/// is named in full (`single/raw_sqlx`), so the performance targets can find them.
#[derive(Clone)]
pub struct Baseline {
    /// The single appends' benchmark, `single/{baseline}`.
    pub single: &'static str,
    /// The 8 concurrent writers' benchmark, `single_8_writers/{baseline}`, if it runs one.
    pub writers: Option<&'static str>,
    /// The batches' benchmark, `batch_100/{baseline}`.
    pub batch: &'static str,
    /// The insert.
    pub insert: Insert,
}

impl std::fmt::Debug for Baseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Baseline")
            .field("single", &self.single)
            .field("writers", &self.writers)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

/// The multi-threaded runtime the benchmarks run on.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Times `work(round, iters)` as one criterion sample; `round` numbers the samples so each
/// writes to streams of its own.
pub fn timed<F, Fut>(group: &mut BenchmarkGroup<'_, WallTime>, rt: &Runtime, id: &str, mut work: F)
where
    F: FnMut(u64, u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut round = 0;
    group.bench_function(id, |b| {
        b.to_async(rt).iter_custom(|iters| {
            round += 1;
            let work = work(round, iters);
            async move {
                let start = Instant::now();
                work.await;
                start.elapsed()
            }
        });
    });
}

/// The group `name` of append benchmarks on `store`, each beside `baselines`.
pub fn appends(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    store: Arc<dyn EventStore>,
    baselines: &[Baseline],
) {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));

    group.throughput(Throughput::Elements(1));
    timed(&mut group, rt, "single/flext", |round, iters| {
        let store = store.clone();
        async move {
            workload::append_one_by_one(&*store, &format!("single-{round}"), iters)
                .await
                .expect("appends succeed");
        }
    });
    for baseline in baselines {
        timed(&mut group, rt, baseline.single, |round, iters| {
            one_by_one(baseline.insert.clone(), format!("single-{round}"), iters)
        });
    }

    group.throughput(Throughput::Elements(WRITERS));
    timed(&mut group, rt, "single_8_writers/flext", |round, iters| {
        let store = store.clone();
        async move {
            workload::append_concurrently(store, &format!("writers-{round}"), WRITERS, iters)
                .await
                .expect("appends succeed");
        }
    });
    for (baseline, id) in baselines.iter().filter_map(|b| Some((b, b.writers?))) {
        timed(&mut group, rt, id, |round, iters| {
            concurrently(
                baseline.insert.clone(),
                format!("writers-{round}"),
                WRITERS,
                iters,
            )
        });
    }

    group.throughput(Throughput::Elements(BATCH));
    timed(&mut group, rt, "batch_100/flext", |round, iters| {
        let store = store.clone();
        async move {
            workload::append_in_batches(&*store, &format!("batch-{round}"), iters, BATCH)
                .await
                .expect("appends succeed");
        }
    });
    for baseline in baselines {
        timed(&mut group, rt, baseline.batch, |round, iters| {
            let insert = baseline.insert.clone();
            async move {
                let stream = format!("batch-{round}");
                for batch in 0..iters {
                    insert(stream.clone(), batch * BATCH, BATCH).await;
                }
            }
        });
    }
    group.finish();
}

/// The group `name`: `writers` concurrent writers (for each count given), each appending
/// single events to a stream of its own, on `store` (`{writers}/flext`) and beside each
/// labelled baseline (`{writers}/{label}`); throughput in appends, so the figures of one
/// row compare directly.
pub fn writers(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    store: Arc<dyn EventStore>,
    baselines: &[(&str, Insert)],
    counts: &[u64],
) {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for &writers in counts {
        group.throughput(Throughput::Elements(writers));
        timed(
            &mut group,
            rt,
            &format!("{writers}/flext"),
            |round, iters| {
                let store = store.clone();
                async move {
                    workload::append_concurrently(
                        store,
                        &format!("w{writers}-{round}"),
                        writers,
                        iters,
                    )
                    .await
                    .expect("appends succeed");
                }
            },
        );
        for (label, insert) in baselines {
            timed(
                &mut group,
                rt,
                &format!("{writers}/{label}"),
                |round, iters| {
                    concurrently(
                        insert.clone(),
                        format!("w{writers}-{round}"),
                        writers,
                        iters,
                    )
                },
            );
        }
    }
    group.finish();
}

/// `writers` tasks each making `iters` single inserts into a stream of its own
/// (`{prefix}-{writer}`). Awaited inside the timed future, the tasks are spawned there, so
/// the clock runs from the first write.
async fn concurrently(insert: Insert, prefix: String, writers: u64, iters: u64) {
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            tokio::spawn(one_by_one(
                insert.clone(),
                format!("{prefix}-{writer}"),
                iters,
            ))
        })
        .collect();
    for task in tasks {
        task.await.expect("a writer finishes");
    }
}

/// `count` single inserts into `stream`, one after the other.
async fn one_by_one(insert: Insert, stream: String, count: u64) {
    for version in 0..count {
        insert(stream.clone(), version, 1).await;
    }
}

/// A boxed read of a read baseline: `read(page)` reads every event of the store's fixture
/// from the start, `page` events at a time, and returns how many it read.
pub type ReadAll = Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = u64> + Send>> + Send + Sync>;

/// What a store's read-all is compared with, named in full
/// (`all_10000_pages_of_1000_raw_rusqlite`): it reads the fixture [`reads`] wrote, so it
/// runs after the store's own reads in the same group.
#[derive(Clone)]
pub struct ReadBaseline {
    /// The benchmark's id in the group.
    pub all: &'static str,
    /// The read.
    pub read: ReadAll,
}

impl std::fmt::Debug for ReadBaseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBaseline")
            .field("all", &self.all)
            .finish_non_exhaustive()
    }
}

/// The group `name` of read benchmarks on `store`, after writing their fixture: a stream
/// of 1000 events read whole, and 10 000 events read from the start in pages of 1000.
pub fn reads(c: &mut Criterion, rt: &Runtime, name: &str, store: Arc<dyn EventStore>) {
    reads_beside(c, rt, name, store, &[]);
}

/// [`reads`], with the read-all beside each of `baselines`, reading the same fixture.
pub fn reads_beside(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    store: Arc<dyn EventStore>,
    baselines: &[ReadBaseline],
) {
    rt.block_on(async {
        workload::append_in_batches(&*store, "long", STREAM_LEN / BATCH, BATCH).await?;
        workload::append_in_batches(
            &*store,
            "other",
            (READ_ALL_EVENTS - STREAM_LEN) / BATCH,
            BATCH,
        )
        .await
    })
    .expect("the read fixture is written");
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(STREAM_LEN));
    group.bench_function("stream_1000", |b| {
        b.to_async(rt).iter(|| async {
            assert_eq!(
                workload::read_stream(&*store, "long").await.ok(),
                Some(STREAM_LEN)
            );
        });
    });
    group.throughput(Throughput::Elements(READ_ALL_EVENTS));
    group.bench_function("all_10000_pages_of_1000", |b| {
        b.to_async(rt).iter(|| async {
            assert_eq!(
                workload::read_all(&*store, 1_000).await.ok(),
                Some(READ_ALL_EVENTS)
            );
        });
    });
    for baseline in baselines {
        group.bench_function(baseline.all, |b| {
            b.to_async(rt).iter(|| async {
                assert_eq!((baseline.read)(1_000).await, READ_ALL_EVENTS);
            });
        });
    }
    group.finish();
}
