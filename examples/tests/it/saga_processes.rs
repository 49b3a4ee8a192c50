//! Two OS processes resume one crashed saga run on one shared store (a SQLite file, or a
//! PostgreSQL schema when `FLEXT_TEST_POSTGRES_URL` is set), and each compensation runs
//! once: one resumer records it and runs it, the other is turned away before running
//! anything.
//!
//! The processes are this test binary run again as `saga_processes::saga_child`, told by
//! environment variables what to be: the `crasher` runs an order whose shipment is refused
//! and exits on the spot right after a record of a given type is stored: the shipment's
//! failure (before any compensation), or the first compensation's start (before it ran).
//! Then two `resumer`s start together and resume the run. The outside world is a journal
//! file all three append to. Each resumer waits, after reading the run's records, until the
//! other has read them too, so both start from the same records (the race the saga must
//! settle; a resumer that loads while another is inside a compensation runs it again, which
//! only a per-run lease can prevent). On PostgreSQL, two `owner`s then resume through the
//! store's leases (`Saga::resume_owned`): one takes the run's lease and finishes it, the
//! other leaves it, and neither meets a conflict.
//!
//! Every child is killed and reaped when the test ends, however it ends, and must exit
//! within a minute; the PostgreSQL schema is dropped the same way.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flext_examples::order_saga::{GOOD_CARD, Journal, NO_DELIVERY, Order, Shop, order_saga};
use flext_examples::store_choice::StoreChoice;
use flext_handlers::prelude::*;
use flext_handlers::protocols::EventStream;
use flext_handlers::stores::{LeaseConfig, PostgresEventStore, PostgresStoreOptions};
use flext_handlers::types::{AppendResult, ExpectedVersion, NewEvent, StoredEvent};

/// What the child is: `crasher`, `resumer-1` or `resumer-2`.
const ROLE: &str = "FLEXT_SAGA_CHILD_ROLE";
/// The shared store, as `event_sourcing --store` takes it.
const STORE: &str = "FLEXT_SAGA_CHILD_STORE";
/// The directory of the journal and of the resumers' meeting files.
const DIR: &str = "FLEXT_SAGA_CHILD_DIR";
/// The crasher's: the type of the record after which it dies.
const CRASH_AFTER: &str = "FLEXT_SAGA_CHILD_CRASH_AFTER";
/// The exit code of the crasher's death.
const CRASHED: i32 = 86;
/// The saga run all three work on.
const RUN: &str = "o-1";
/// How long a child may run before it is killed and the test fails.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

/// The order: reserved and charged, then the carrier refuses it, so both are undone.
fn order() -> Order {
    Order::new(RUN, "WIDGET", 1, 2_999, GOOD_CARD, NO_DELIVERY)
}

/// In a child: crash a run, or resume it (and print how that went). Does nothing unless
/// `ROLE` is set, so only the tests below run it, in child processes.
#[tokio::test]
async fn saga_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let spec = std::env::var(STORE).expect("the store is given");
    let dir = PathBuf::from(std::env::var(DIR).expect("the directory is given"));
    let store = StoreChoice::parse(&spec)
        .unwrap()
        .open()
        .await
        .expect("the store opens");
    let journal = Journal::shared(dir.join("journal"), &role);
    let shop = Arc::new(Shop::new(journal, &[("WIDGET", 10)]));
    if role.starts_with("owner-") {
        let StoreChoice::Postgres { url, schema } = StoreChoice::parse(&spec).unwrap() else {
            panic!("owners resume through PostgreSQL's leases");
        };
        let leased =
            PostgresEventStore::connect_with(PostgresStoreOptions::new(url).with_schema(schema))
                .await
                .expect("the store opens");
        let saga = order_saga(Arc::new(leased.clone()), shop).unwrap();
        // Both owners start the race at once.
        meet(&dir, &role).await;
        let resumed = saga
            .resume_owned(&leased.leases(LeaseConfig::new(role.clone())))
            .await
            .expect("the scan reads the log");
        for (id, result) in resumed {
            match result {
                Ok(outcome) => println!(
                    "owned: {id} {:?}, compensated {:?}",
                    outcome.status, outcome.compensated
                ),
                Err(error) => println!("owned: {id} error {}: {error}", error.code().name()),
            }
        }
        println!("owned: done");
        return;
    }
    if role == "crasher" {
        let crash_after = std::env::var(CRASH_AFTER).expect("the crash point is given");
        let store = ChildStore::new(store, Fault::ExitAfterRecording(crash_after));
        let saga = order_saga(Arc::new(store), shop).unwrap();
        let result = saga.run(RUN, order().into()).await;
        panic!("the crasher was to die once the record was stored: {result:?}");
    }
    let store = ChildStore::new(
        store,
        Fault::MeetAfterFirstRead {
            dir,
            me: role,
            met: AtomicBool::new(false),
        },
    );
    let saga = order_saga(Arc::new(store), shop).unwrap();
    match saga.resume(RUN).await {
        Ok(outcome) => println!(
            "resumed: {:?}, compensated {:?}",
            outcome.status, outcome.compensated
        ),
        Err(error) => println!("resumed: error {}: {error}", error.code().name()),
    }
}

/// Where the crasher dies.
#[derive(Debug, Clone, Copy)]
enum Crash {
    /// Once the shipment's failure is recorded, before any compensation.
    BeforeCompensating,
    /// Once the refund's start is recorded, before the refund ran.
    InsideCompensation,
}

impl Crash {
    /// The type of the record after which the crasher dies.
    fn after_recording(self) -> &'static str {
        match self {
            Crash::BeforeCompensating => "SagaStepFailed",
            Crash::InsideCompensation => "SagaCompensationStarted",
        }
    }

    /// The run's records once one resumer has finished it.
    fn records(self) -> Vec<&'static str> {
        let mut records = vec![
            "SagaStarted",
            "SagaStepStarted",
            "SagaStepCompleted",
            "SagaStepStarted",
            "SagaStepCompleted",
            "SagaStepStarted",
            "SagaStepFailed",
        ];
        if let Crash::InsideCompensation = self {
            // The crasher's announcement of the refund, which it never ran.
            records.push("SagaCompensationStarted");
        }
        records.extend([
            "SagaCompensationStarted",
            "SagaStepCompensated",
            "SagaCompensationStarted",
            "SagaStepCompensated",
            "SagaCompensated",
        ]);
        records
    }
}

#[tokio::test]
async fn two_processes_resuming_one_crashed_run_on_sqlite_run_each_compensation_once() {
    on_sqlite(Crash::BeforeCompensating).await;
}

#[tokio::test]
async fn two_processes_resuming_one_crashed_run_on_postgres_run_each_compensation_once() {
    on_postgres(Crash::BeforeCompensating).await;
}

#[tokio::test]
async fn two_processes_resuming_a_run_crashed_inside_a_compensation_on_sqlite_run_it_once() {
    on_sqlite(Crash::InsideCompensation).await;
}

#[tokio::test]
async fn two_processes_resuming_a_run_crashed_inside_a_compensation_on_postgres_run_it_once() {
    on_postgres(Crash::InsideCompensation).await;
}

/// Before leases, two processes resuming one run raced for it, and the loser met a
/// `CONCURRENCY_CONFLICT` (or, loading while the other was inside a compensation, ran it
/// again). Through the store's leases one process owns the run and the other leaves it.
#[tokio::test]
async fn two_processes_resuming_through_postgres_leases_run_each_compensation_once() {
    let Some((dir, _schema, spec)) = on_a_schema_of_its_own("lease") else {
        return;
    };
    let store = StoreChoice::parse(&spec).unwrap().open().await.unwrap();
    let crash = Crash::BeforeCompensating;
    let crasher = Spawned::child("crasher", &spec, &dir.0, crash)
        .finish()
        .await;
    assert_eq!(crasher.status.code(), Some(CRASHED), "{crasher:?}");
    assert_eq!(unfinished_once(&store, &[RUN]).await, [RUN]);

    let owners = ["owner-1", "owner-2"].map(|role| Spawned::child(role, &spec, &dir.0, crash));
    let mut reports = Vec::new();
    for owner in owners {
        let finished = owner.finish().await;
        assert!(finished.status.success(), "{finished:?}");
        let lines: Vec<String> = finished
            .stdout
            .lines()
            .filter_map(|line| line.split_once("owned: ").map(|(_, r)| r.to_owned()))
            .collect();
        assert_eq!(
            lines.last().map(String::as_str),
            Some("done"),
            "{finished:?}"
        );
        reports.push((finished.role, lines));
    }
    // No owner met a conflict; the run was finished (a process that took the lease after
    // the other released it finds the run finished and runs nothing).
    let all: Vec<&String> = reports.iter().flat_map(|(_, lines)| lines).collect();
    assert!(
        all.iter().all(|line| !line.contains("error")),
        "{reports:?}"
    );
    assert!(
        all.iter().any(|line| {
            *line == r#"o-1 Compensated, compensated ["charge_payment", "reserve_inventory"]"#
        }),
        "{reports:?}"
    );
    // Each compensation ran once, both in one owner.
    let journal = std::fs::read_to_string(dir.0.join("journal")).unwrap();
    let lines: Vec<&str> = journal.lines().collect();
    assert_eq!(lines.len(), 4, "{journal}");
    let owner = lines[2].split_once(' ').unwrap().0;
    assert!(owner.starts_with("owner-"), "{journal}");
    assert_eq!(
        lines[2..],
        [
            format!("{owner} refunded $29.99 for o-1 (pay-o-1)"),
            format!("{owner} released 1 × WIDGET for o-1 (res-o-1)"),
        ],
        "{reports:?}"
    );
    let saga = order_saga(store.clone(), Arc::new(Shop::new(Journal::new(), &[]))).unwrap();
    let records: Vec<String> = store
        .read_stream(&saga.stream_id(RUN), 1, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_type.to_string())
        .collect();
    assert_eq!(records, crash.records());
    assert!(unfinished_once(&store, &[]).await.is_empty());
}

/// A scratch directory and a PostgreSQL schema of its own (`example_{what}_…`, never one an
/// earlier run left, dropped however the test ends) with the store spec naming it; `None`
/// (skipped) without a test server.
fn on_a_schema_of_its_own(what: &str) -> Option<(Scratch, DroppedSchema, String)> {
    let schema = DroppedSchema::of_its_own(what)?;
    let spec = format!("postgres:{}#{}", schema.url, schema.name);
    Some((Scratch::new(what), schema, spec))
}

async fn on_sqlite(crash: Crash) {
    let dir = Scratch::new("sqlite");
    let spec = format!("sqlite:{}", dir.0.join("events.db").display());
    two_resumers_of_one_crashed_run(&spec, &dir.0, crash).await;
}

async fn on_postgres(crash: Crash) {
    let Some((dir, _schema, spec)) = on_a_schema_of_its_own("saga") else {
        return;
    };
    two_resumers_of_one_crashed_run(&spec, &dir.0, crash).await;
}

/// The saga's unfinished runs once the log shows `expected`, waiting up to 30 s (then
/// whatever it shows): on PostgreSQL a commit shows to readers of the whole log once every
/// older append to the store has ended, and the children may still be appending.
/// (Once the parent sees a record, the children do too: every event below a barrier a
/// read has passed is final.)
async fn unfinished_once(store: &Arc<dyn EventStore>, expected: &[&str]) -> Vec<String> {
    let saga = order_saga(store.clone(), Arc::new(Shop::new(Journal::new(), &[]))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = saga.unfinished().await.unwrap();
        if runs == expected || Instant::now() >= deadline {
            return runs;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn two_resumers_of_one_crashed_run(spec: &str, dir: &Path, crash: Crash) {
    // The parent creates the store (its tables), so the children only use it.
    let store = StoreChoice::parse(spec).unwrap().open().await.unwrap();

    let crasher = Spawned::child("crasher", spec, dir, crash).finish().await;
    assert_eq!(
        crasher.status.code(),
        Some(CRASHED),
        "the crasher died where it was to: {crasher:?}"
    );
    let saga = order_saga(store.clone(), Arc::new(Shop::new(Journal::new(), &[]))).unwrap();
    assert_eq!(unfinished_once(&store, &[RUN]).await, [RUN]);

    // Both are spawned before either is waited for; each is killed if the test stops first.
    let resumers = ["resumer-1", "resumer-2"].map(|role| Spawned::child(role, spec, dir, crash));
    let mut reports = Vec::new();
    for resumer in resumers {
        let finished = resumer.finish().await;
        assert!(finished.status.success(), "{finished:?}");
        let report = finished
            .stdout
            .lines()
            // The harness prints the test's name on the same line.
            .find_map(|line| line.split_once("resumed: ").map(|(_, r)| r.to_owned()))
            .unwrap_or_else(|| panic!("no report: {finished:?}"));
        reports.push((finished.role, report));
    }

    // One resumer drove the run to its end; the other was turned away.
    let winners: Vec<&str> = reports
        .iter()
        .filter(|(_, report)| {
            report == r#"Compensated, compensated ["charge_payment", "reserve_inventory"]"#
        })
        .map(|(role, _)| role.as_str())
        .collect();
    let losers: Vec<&str> = reports
        .iter()
        .filter(|(_, report)| {
            report.starts_with(
                "error CONCURRENCY_CONFLICT: Saga 'order' run 'o-1' is being driven elsewhere",
            )
        })
        .map(|(role, _)| role.as_str())
        .collect();
    assert_eq!((winners.len(), losers.len()), (1, 1), "{reports:?}");

    // Each effect happened once, each compensation by the winner alone (after a crash inside
    // the refund too: the crasher had announced it, not run it).
    let journal = std::fs::read_to_string(dir.join("journal")).unwrap();
    let lines: Vec<&str> = journal.lines().collect();
    let winner = winners[0];
    assert_eq!(
        lines,
        [
            "crasher reserved 1 × WIDGET for o-1 (res-o-1)".to_owned(),
            "crasher charged $29.99 to card …4242 for o-1 (pay-o-1)".to_owned(),
            format!("{winner} refunded $29.99 for o-1 (pay-o-1)"),
            format!("{winner} released 1 × WIDGET for o-1 (res-o-1)"),
        ],
        "{reports:?}"
    );
    let records: Vec<String> = store
        .read_stream(&saga.stream_id(RUN), 1, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_type.to_string())
        .collect();
    assert_eq!(records, crash.records(), "{crash:?}");
    assert!(unfinished_once(&store, &[]).await.is_empty());
    let outcome = saga.resume(RUN).await.unwrap();
    assert_eq!(outcome.compensated, ["charge_payment", "reserve_inventory"]);
}

/// A child process: this test binary, run as the child `role`. Its output goes to files in
/// the scratch directory (no pipe to fill up while it is not read). Dropped, it is killed
/// and reaped, whether it is still running or not, so no child outlives a failed test.
struct Spawned {
    role: String,
    process: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    deadline: Instant,
}

/// How a child ended.
struct Finished {
    role: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}\n--- stdout\n{}\n--- stderr\n{}",
            self.role, self.status, self.stdout, self.stderr
        )
    }
}

impl Spawned {
    /// Starts the child `role` on the store `spec`, in `dir`; a crasher dies where `crash`
    /// says. It has [`CHILD_DEADLINE`] from now to exit.
    fn child(role: &str, spec: &str, dir: &Path, crash: Crash) -> Self {
        let stdout = dir.join(format!("{role}.stdout"));
        let stderr = dir.join(format!("{role}.stderr"));
        let process = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "saga_processes::saga_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(ROLE, role)
            .env(STORE, spec)
            .env(DIR, dir)
            .env(CRASH_AFTER, crash.after_recording())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {role}: {e}"));
        Self {
            role: role.to_owned(),
            process,
            stdout,
            stderr,
            deadline: Instant::now() + CHILD_DEADLINE,
        }
    }

    /// Waits for the child to exit and returns how it ended; past its deadline, kills it
    /// and fails the test.
    async fn finish(mut self) -> Finished {
        let status = loop {
            match self.process.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < self.deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(None) => {
                    let killed = self.kill();
                    panic!(
                        "{} did not exit within {CHILD_DEADLINE:?}, so it was killed: {killed:?}",
                        self.role
                    );
                }
                Err(error) => panic!("cannot wait for {}: {error}", self.role),
            }
        };
        self.output(status)
    }

    fn output(&self, status: ExitStatus) -> Finished {
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        Finished {
            role: self.role.clone(),
            status,
            stdout: read(&self.stdout),
            stderr: read(&self.stderr),
        }
    }

    /// Kills the child if it still runs, reaps it, and returns how it ended (`None` when it
    /// cannot be reaped).
    fn kill(&mut self) -> Option<Finished> {
        let _ = self.process.kill();
        self.process.wait().ok().map(|status| self.output(status))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL schema dropped (with its tables) when this is dropped, however the test
/// ends. The examples reach PostgreSQL through the facade only (sqlx is the adapter's), so
/// the drop goes through a store's own pool: `begin_with` opens a transaction with the
/// statement given, which here also drops the schema.
pub(crate) struct DroppedSchema {
    pub(crate) url: String,
    pub(crate) name: String,
}

impl DroppedSchema {
    /// A schema of its own for the test `what` on `FLEXT_TEST_POSTGRES_URL`'s server,
    /// named for the test, this process and the moment (`example_{what}_…`, which the CI
    /// script drops if a run leaves it behind); `None`, saying the test is skipped, when
    /// the variable is unset.
    pub(crate) fn of_its_own(what: &str) -> Option<Self> {
        let Ok(url) = std::env::var("FLEXT_TEST_POSTGRES_URL") else {
            eprintln!("skipped: FLEXT_TEST_POSTGRES_URL is not set");
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "example_{what}_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000_000
        );
        Some(Self { url, name })
    }
}

impl Drop for DroppedSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        clean_up_aside(&format!("drop schema {}", self.name), async move {
            let options = PostgresStoreOptions::new(url).with_schema(name.clone());
            let store = PostgresEventStore::connect_with(options)
                .await
                .map_err(|e| e.to_string())?;
            let drop = format!("BEGIN; DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
            let transaction = store
                .pool()
                .begin_with(drop)
                .await
                .map_err(|e| e.to_string())?;
            transaction.commit().await.map_err(|e| e.to_string())
        });
    }
}

/// Runs the clean-up `work` (at most 30 s) on a thread and runtime of its own — a drop
/// may run inside the test's runtime, which cannot block on another future — and says
/// on stderr when it failed.
pub(crate) fn clean_up_aside<F>(what: &str, work: F)
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let done = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            tokio::time::timeout(Duration::from_secs(30), work)
                .await
                .map_err(|_| "timed out".to_owned())?
        })
    })
    .join();
    if !matches!(done, Ok(Ok(()))) {
        eprintln!("could not {what}: {done:?}");
    }
}

/// What a child's store does besides storing.
enum Fault {
    /// Ends the process on the spot (no destructor, no further record) once a record of
    /// this type is stored.
    ExitAfterRecording(String),
    /// After its first `read_stream`, writes `dir/read-{me}` and waits until both resumers
    /// have.
    MeetAfterFirstRead {
        dir: PathBuf,
        me: String,
        met: AtomicBool,
    },
}

/// A child's store: the shared one, with its fault.
struct ChildStore {
    inner: Arc<dyn EventStore>,
    fault: Fault,
}

impl ChildStore {
    fn new(inner: Arc<dyn EventStore>, fault: Fault) -> Self {
        Self { inner, fault }
    }
}

#[async_trait]
impl EventStore for ChildStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        let fatal = match &self.fault {
            Fault::ExitAfterRecording(event_type) => {
                events.iter().any(|e| e.event_type == event_type.as_str())
            }
            Fault::MeetAfterFirstRead { .. } => false,
        };
        let appended = self.inner.append(stream_id, expected, events).await;
        if fatal && appended.is_ok() {
            std::process::exit(CRASHED);
        }
        appended
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: usize,
    ) -> FlextResult<Vec<StoredEvent>> {
        let read = self.inner.read_stream(stream_id, from_version, limit).await;
        if let Fault::MeetAfterFirstRead { dir, me, met } = &self.fault
            && !met.swap(true, Ordering::SeqCst)
        {
            meet(dir, me).await;
        }
        read
    }

    async fn read_all(&self, from_position: u64, limit: usize) -> FlextResult<Vec<StoredEvent>> {
        self.inner.read_all(from_position, limit).await
    }

    async fn stream_version(&self, stream_id: &str) -> FlextResult<u64> {
        self.inner.stream_version(stream_id).await
    }

    async fn head_position(&self) -> FlextResult<u64> {
        self.inner.head_position().await
    }

    async fn subscribe(&self, from_position: u64) -> FlextResult<EventStream> {
        self.inner.subscribe(from_position).await
    }
}

/// Says `me` has read, then waits (up to 30 s) until both resumers have.
async fn meet(dir: &Path, me: &str) {
    std::fs::write(dir.join(format!("read-{me}")), b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = std::fs::read_dir(dir)
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("read-"))
            })
            .count();
        if read >= 2 {
            return;
        }
        assert!(Instant::now() < deadline, "the other resumer never read");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "flext-saga-processes-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
