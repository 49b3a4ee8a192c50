//! Opening one fresh durable store from several places at once: pools in this process and
//! child processes (the test binary running itself), released together, must all open it
//! and find it ready, and the store's schema must be created once.
//!
//! [`concurrent_open_test!`](crate::concurrent_open_test) writes both tests in a store's
//! `tests/`; the functions here are what they run.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flext_protocols::EventStore;
use flext_types::{ExpectedVersion, FlextResult, JsonPayload, NewEvent};

/// Child processes that open the store.
pub const CHILDREN: usize = 3;

/// Stores this process opens, each with a pool of its own.
pub const IN_PROCESS: usize = 5;

/// What starts each line a child says to the parent. libtest may print a test's name on
/// the same line before it, so the parent looks for it anywhere in a line.
const SAYS: &str = "[opener] ";

/// How long the parent waits for a child to start, and then for each opener (in this
/// process or a child) to open the store; how long a child's open may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// What an opener appends once the store is open: one event to a stream named after it.
async fn append_as(store: &impl EventStore, opener: &str) -> FlextResult<()> {
    let event = NewEvent::new(
        "Opened",
        JsonPayload::encode(&serde_json::json!({"opener": opener}))?,
    );
    store
        .append(
            &format!("opener-{opener}"),
            ExpectedVersion::NoStream,
            vec![event],
        )
        .await
        .map(drop)
}

/// In a child: says `ready`, waits for the parent's `go` on stdin, opens the store with
/// `open`, appends as itself and says `opened` (or `failed: …`). An input that ends (or
/// says anything else) before `go` means the parent gave up: the child says `aborted` and
/// ends without touching the store. An open and append that take longer than
/// a minute fail, so a stuck lock ends the child instead of hanging it.
pub async fn open_in_child<S, F>(place: String, open: impl FnOnce(String) -> F)
where
    S: EventStore,
    F: Future<Output = FlextResult<S>>,
{
    let said = child_opens(std::io::stdin().lock(), place, open).await;
    println!("{SAYS}{said}");
}

/// [`open_in_child`] reading the parent's word from `input`; returns what the child says
/// last (`aborted`, `opened …` or `failed: …`).
async fn child_opens<S, F>(
    input: impl BufRead,
    place: String,
    open: impl FnOnce(String) -> F,
) -> String
where
    S: EventStore,
    F: Future<Output = FlextResult<S>>,
{
    println!("{SAYS}ready");
    let _ = std::io::stdout().flush();
    if !released(input) {
        return "aborted".to_owned();
    }
    let opener = format!("child-{}", std::process::id());
    let opening = async {
        let store = open(place).await?;
        append_as(&store, &opener).await
    };
    match tokio::time::timeout(PATIENCE, opening).await {
        Ok(Ok(())) => format!("opened {opener}"),
        Ok(Err(error)) => format!("failed: {error:?}"),
        Err(_) => format!("failed: no open within {PATIENCE:?}"),
    }
}

/// Whether `input`'s first line is the parent's `go`. The end of the input (the parent
/// ended or dropped the pipe), an error or any other line is not.
fn released(mut input: impl BufRead) -> bool {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .is_ok_and(|_| line.trim_end() == "go")
}

/// The parent's children, each killed and waited for when this is dropped: on success and
/// on every failure or panic of the parent alike, so none outlives its test.
#[derive(Default)]
struct Children(Vec<Child>);

impl Children {
    fn push(&mut self, child: Child) {
        self.0.push(child);
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // A child that has already ended refuses the kill; the wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// In the parent: starts [`CHILDREN`] runs of this test binary's `child_test` with `env`
/// set to `place` (a store that does not exist yet) and, once every child is ready, releases
/// them and opens [`IN_PROCESS`] stores at `place` with `open` at the same moment. Every
/// opener must succeed, and a store opened afterwards holds exactly one event of each.
pub async fn open_concurrently<S, F>(
    child_test: &str,
    env: &str,
    place: &str,
    open: impl Fn(String) -> F,
) where
    S: EventStore + 'static,
    F: Future<Output = FlextResult<S>> + Send + 'static,
{
    let (lines, heard) = mpsc::channel::<(usize, Option<String>)>();
    // Held from the first spawn: whatever fails below, every child is killed and reaped.
    let mut children = Children::default();
    for n in 0..CHILDREN {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", child_test, "--nocapture", "--test-threads", "1"])
            .env(env, place)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("a child starts");
        let stdout = child.stdout.take().expect("piped stdout");
        children.push(child);
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send((n, Some(line)));
            }
            let _ = lines.send((n, None));
        });
    }
    drop(lines);

    // Every child says `ready` (or ends) before any opener starts.
    let mut voices = Voices {
        heard,
        ready: BTreeSet::new(),
        outcomes: vec![None; CHILDREN],
    };
    tokio::task::block_in_place(|| voices.listen_until(|v| v.ready.len() == CHILDREN));
    assert_eq!(voices.ready.len(), CHILDREN, "every child started in time");

    for child in &mut children.0 {
        let stdin = child.stdin.as_mut().expect("piped stdin");
        let _ = writeln!(stdin, "go").and_then(|()| stdin.flush());
    }
    let tasks: Vec<_> = (0..IN_PROCESS)
        .map(|n| {
            let opening = open(place.to_owned());
            tokio::spawn(async move {
                let store = opening.await?;
                append_as(&store, &format!("task-{n}")).await
            })
        })
        .collect();
    // One deadline for them all: a stuck lock fails the test instead of hanging it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut failures = Vec::new();
    for (n, mut task) in tasks.into_iter().enumerate() {
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(outcome) => {
                if let Err(error) = outcome.expect("an opener task") {
                    failures.push(format!("in-process opener {n}: {error:?}"));
                }
            }
            Err(_) => {
                task.abort();
                failures.push(format!(
                    "in-process opener {n}: no open within {PATIENCE:?}"
                ));
            }
        }
    }

    tokio::task::block_in_place(|| voices.listen_until(|v| v.outcomes.iter().all(Option::is_some)));
    drop(children);
    for (n, outcome) in voices.outcomes.iter().enumerate() {
        match outcome {
            Some(line) if line.starts_with("opened ") => {}
            Some(line) => failures.push(format!("child {n}: {line}")),
            None => failures.push(format!("child {n}: no answer in time")),
        }
    }
    assert!(
        failures.is_empty(),
        "every opener of a fresh store succeeds:\n{}",
        failures.join("\n")
    );

    let store = tokio::time::timeout(PATIENCE, open(place.to_owned()))
        .await
        .expect("the store opens once more within the patience")
        .expect("the store opens once more");
    // Every opener's append has returned; a store may show a commit to readers a moment
    // later (see `caught_up`), so the log is read until it holds them all.
    let deadline = Instant::now() + PATIENCE;
    let all = loop {
        let all = store.read_all(1, usize::MAX).await.expect("read_all");
        if all.len() >= CHILDREN + IN_PROCESS || Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        all.len(),
        CHILDREN + IN_PROCESS,
        "each opener's event, once: {all:?}"
    );
    assert!(
        all.iter()
            .all(|e| e.stream_id.starts_with("opener-") && e.version == 1),
        "each opener's event starts its own stream"
    );
    assert!(
        all.first().is_some_and(|e| e.position >= 1)
            && all.windows(2).all(|w| w[0].position < w[1].position),
        "positions from 1 on, strictly increasing: {:?}",
        all.iter().map(|e| e.position).collect::<Vec<_>>()
    );
}

/// What the children said: which are ready, and how each open went.
struct Voices {
    heard: mpsc::Receiver<(usize, Option<String>)>,
    ready: BTreeSet<usize>,
    outcomes: Vec<Option<String>>,
}

impl Voices {
    /// Reads the children's lines until `done` (or [`PATIENCE`] has passed). A child that
    /// ends counts as ready, and as failed unless it said otherwise.
    fn listen_until(&mut self, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.heard.recv_timeout(left) {
                Ok((n, Some(line))) => match line.split_once(SAYS) {
                    Some((_, "ready")) => {
                        self.ready.insert(n);
                    }
                    Some((_, said)) => self.outcomes[n] = Some(said.to_owned()),
                    None => {}
                },
                Ok((n, None)) => {
                    self.ready.insert(n);
                    self.outcomes[n].get_or_insert_with(|| "failed: it ended".to_owned());
                }
                Err(_) => break,
            }
        }
    }
}

/// The name libtest gives the test `name` of the module `module` (a `module_path!()`, whose
/// first segment is the crate's).
pub fn test_name(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_, inner)) => format!("{inner}::{name}"),
        None => name.to_owned(),
    }
}

/// Writes a durable store's concurrent-open test: `concurrent_open_child` (which does
/// nothing unless `$env` is set, so only the parent's children run it) and
/// `concurrent_opens_of_a_fresh_store_all_succeed`.
///
/// - `$env`: the variable that tells a child where the store is;
/// - `$fresh`: an async fn returning `Option<String>`, a place where no store exists yet
///   (nothing created), or `None` to skip;
/// - `$open`: an async fn opening the store at a place, `FlextResult<S>`;
/// - `$schema`: an async fn given the place once every opener is done, checking what only
///   the store knows (each migration recorded once, say).
///
/// Invoke it in a module of the integration-test binary; the calling crate needs `tokio`
/// with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! concurrent_open_test {
    (env: $env:expr, fresh: $fresh:path, open: $open:path, schema: $schema:path) => {
        /// In a child: open the store when the parent says go, and say how it went.
        #[tokio::test]
        async fn concurrent_open_child() {
            let Ok(place) = std::env::var($env) else {
                return; // Only the concurrent-open test runs this, in child processes.
            };
            $crate::event_store::opening::open_in_child(place, $open).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_opens_of_a_fresh_store_all_succeed() {
            let Some(place) = $fresh().await else {
                return;
            };
            let child =
                $crate::event_store::opening::test_name(module_path!(), "concurrent_open_child");
            $crate::event_store::opening::open_concurrently(&child, $env, &place, $open).await;
            $schema(place).await;
        }
    };
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::Cursor;

    use flext_store::InMemoryEventStore;

    use super::*;

    /// What a child says, and whether it opened the store, given `input` on its stdin.
    async fn child_given(input: &str) -> (String, bool) {
        let touched = Cell::new(false);
        let said = child_opens(
            Cursor::new(input.to_owned()),
            "place".to_owned(),
            |_| async {
                touched.set(true);
                Ok::<_, flext_types::FlextError>(InMemoryEventStore::new())
            },
        )
        .await;
        (said, touched.get())
    }

    #[tokio::test]
    async fn a_child_whose_input_ends_before_go_aborts_without_touching_the_store() {
        for input in ["", "\n", "stop\n", "gone\n"] {
            let (said, touched) = child_given(input).await;
            assert_eq!(said, "aborted", "{input:?}");
            assert!(!touched, "{input:?}: the store was not opened");
        }
        let (said, touched) = child_given("go\n").await;
        assert!(said.starts_with("opened child-"), "{said}");
        assert!(touched, "the store was opened on go");
    }

    #[test]
    fn dropped_children_are_killed_and_reaped() {
        let mut children = Children::default();
        let mut pids = Vec::new();
        for _ in 0..2 {
            let child = Command::new("sleep")
                .arg("600")
                .stdin(Stdio::piped())
                .spawn()
                .expect("sleep starts");
            pids.push(child.id());
            children.push(child);
        }
        let started = Instant::now();
        drop(children);
        assert!(
            started.elapsed() < PATIENCE,
            "killed at once, not waited out"
        );
        for pid in pids {
            // A reaped child has no process entry left (a zombie would keep one).
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "child {pid} was killed and reaped"
            );
        }
    }
}
