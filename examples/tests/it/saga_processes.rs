//! Two OS processes resume one crashed saga run on one shared store (a SQLite file, or a
//! PostgreSQL schema when `FLEXT_TEST_POSTGRES_URL` is set), and each compensation runs
//! once: one resumer records it and runs it, the other is turned away before running
//! anything.
//!
//! The processes are this test binary run again as `saga_processes::saga_child`, told by
//! environment variables what to be: the `crasher` runs an order whose shipment is refused
//! and exits on the spot right after the failure is recorded, before compensating; then two
//! `resumer`s start together and resume the run. The outside world is a journal file all
//! three append to. Each resumer waits, after reading the run's records, until the other has
//! read them too, so both start from the same records (the race the saga must settle).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flext_examples::order_saga::{GOOD_CARD, Journal, NO_DELIVERY, Order, Shop, order_saga};
use flext_examples::store_choice::StoreChoice;
use flext_handlers::prelude::*;
use flext_handlers::protocols::EventStream;
use flext_handlers::types::{AppendResult, ExpectedVersion, NewEvent, StoredEvent};

/// What the child is: `crasher`, `resumer-1` or `resumer-2`.
const ROLE: &str = "FLEXT_SAGA_CHILD_ROLE";
/// The shared store, as `event_sourcing --store` takes it.
const STORE: &str = "FLEXT_SAGA_CHILD_STORE";
/// The directory of the journal and of the resumers' meeting files.
const DIR: &str = "FLEXT_SAGA_CHILD_DIR";
/// The exit code of the crasher's death.
const CRASHED: i32 = 86;
/// The saga run all three work on.
const RUN: &str = "o-1";

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
    if role == "crasher" {
        let store = ChildStore::new(store, Fault::ExitAfterRecording("SagaStepFailed"));
        let saga = order_saga(Arc::new(store), shop).unwrap();
        let result = saga.run(RUN, order().into()).await;
        panic!("the crasher was to die once the failure was recorded: {result:?}");
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

#[tokio::test]
async fn two_processes_resuming_one_crashed_run_on_sqlite_run_each_compensation_once() {
    let dir = Scratch::new("sqlite");
    let spec = format!("sqlite:{}", dir.0.join("events.db").display());
    two_resumers_of_one_crashed_run(&spec, &dir.0).await;
}

#[tokio::test]
async fn two_processes_resuming_one_crashed_run_on_postgres_run_each_compensation_once() {
    let Ok(url) = std::env::var("FLEXT_TEST_POSTGRES_URL") else {
        eprintln!("skipped: FLEXT_TEST_POSTGRES_URL is not set");
        return;
    };
    let dir = Scratch::new("postgres");
    // A schema of its own (CI drops `example_*` schemas), never one an earlier run left.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let spec = format!(
        "postgres:{url}#example_saga_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    );
    two_resumers_of_one_crashed_run(&spec, &dir.0).await;
}

async fn two_resumers_of_one_crashed_run(spec: &str, dir: &Path) {
    // The parent creates the store (its tables), so the children only use it.
    let store = StoreChoice::parse(spec).unwrap().open().await.unwrap();

    let crasher = child("crasher", spec, dir).output().unwrap();
    assert_eq!(
        crasher.status.code(),
        Some(CRASHED),
        "the crasher died where it was to: {}",
        text(&crasher)
    );
    let saga = order_saga(store.clone(), Arc::new(Shop::new(Journal::new(), &[]))).unwrap();
    assert_eq!(saga.unfinished().await.unwrap(), [RUN]);

    let resumers = ["resumer-1", "resumer-2"].map(|role| child(role, spec, dir).spawn().unwrap());
    let reports: Vec<(String, String)> = resumers
        .into_iter()
        .zip(["resumer-1", "resumer-2"])
        .map(|(process, role)| {
            let output = process.wait_with_output().unwrap();
            assert!(output.status.success(), "{role}: {}", text(&output));
            let report = String::from_utf8_lossy(&output.stdout)
                .lines()
                // The harness prints the test's name on the same line.
                .find_map(|line| line.split_once("resumed: ").map(|(_, r)| r.to_owned()))
                .unwrap_or_else(|| panic!("{role} reports: {}", text(&output)));
            (role.to_owned(), report)
        })
        .collect();

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

    // Each effect happened once, each compensation by the winner alone.
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
    assert!(saga.unfinished().await.unwrap().is_empty());
    let outcome = saga.resume(RUN).await.unwrap();
    assert_eq!(outcome.compensated, ["charge_payment", "reserve_inventory"]);
}

/// This test binary, run as the child `role` on the store `spec`, in `dir`.
fn child(role: &str, spec: &str, dir: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
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
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn text(output: &Output) -> String {
    format!(
        "{:?}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// What a child's store does besides storing.
enum Fault {
    /// Ends the process on the spot (no destructor, no further record) once a record of
    /// this type is stored.
    ExitAfterRecording(&'static str),
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
                events.iter().any(|e| e.event_type == *event_type)
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
