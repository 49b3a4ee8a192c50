//! Three processes run the replicated service of `examples/src/replicas.rs` on one
//! PostgreSQL schema while each sends commands. One, the first owner of both projections,
//! is paused (SIGSTOP) past its leases and continued; later the owner of the balances is
//! killed (SIGKILL). Afterwards the exactly-once read model equals a replay of the log in
//! this process, every event is in the at-least-once read model, every payout run finished
//! once with each piece of its work applied once, and the audit of every checkpoint write
//! shows it was made under the lease then current: the paused process, which watches its
//! leases only through their fences, wrote nothing more under them on waking (its next
//! fenced write refused, or the transaction it was paused in ended by the server).
//!
//! The processes are this test binary run again as `replicas::replica_child`, told by
//! environment variables who to be; their reports go to files. Standard input is each
//! one's controls: a `quiesce` line stops its commands, closing it stops the replica.
//! Every child is killed and reaped however the test ends (a paused one too), and the
//! schema is dropped.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use flext_examples::replicas::{
    BALANCES, COMPENSATED_WORK, COMPLETED_WORK, DEPOSITED, Deposit, LEDGER, LeaseWatch,
    ReplicaOptions, payout_saga, prepare, read_balances, replay_balances, serve_from_stdin,
};
use flext_handlers::prelude::*;
use flext_handlers::protocols::CheckpointStore;
use flext_handlers::stores::sqlx;
use flext_handlers::stores::{PostgresEventStore, PostgresStoreOptions};

use crate::saga_processes::DroppedSchema;

/// The child's label (`replica-1`); unset in the test process itself.
const LABEL: &str = "FLEXT_REPLICA_CHILD_LABEL";
/// The server.
const URL: &str = "FLEXT_REPLICA_CHILD_URL";
/// The shared schema.
const SCHEMA: &str = "FLEXT_REPLICA_CHILD_SCHEMA";
/// `fence` when the child watches its leases only through their fences.
const WATCH: &str = "FLEXT_REPLICA_CHILD_WATCH";
/// The lease TTL of every child.
const TTL: Duration = Duration::from_secs(1);

/// The options of every child: leases of [`TTL`], a command every 40 ms, each reported,
/// payout steps of 100 ms.
fn options(url: String, schema: String, label: String, watch: LeaseWatch) -> ReplicaOptions {
    let mut options = ReplicaOptions::new(url, schema, label);
    options.lease_ttl = TTL;
    options.command_every = Duration::from_millis(40);
    options.report_commands = true;
    // Long enough that a process stopped right after a payout started stops inside it.
    options.step_pause = Duration::from_millis(100);
    options.watch = watch;
    options
}

/// In a child: serve as the replica the environment names. Does nothing unless `LABEL` is
/// set, so only the test below runs it, in child processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_child() {
    let Ok(label) = std::env::var(LABEL) else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is given"));
    let watch = match std::env::var(WATCH).as_deref() {
        Ok("fence") => LeaseWatch::FenceOnly,
        _ => LeaseWatch::Heartbeat,
    };
    serve_from_stdin(options(var(URL), var(SCHEMA), label, watch))
        .await
        .expect("the replica runs until told to stop");
}

/// A running child: killed (continued first, if paused) and reaped when dropped.
struct Replica {
    label: String,
    process: Child,
    controls: Option<ChildStdin>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Replica {
    fn start(label: &str, url: &str, schema: &str, dir: &Path, watch: LeaseWatch) -> Self {
        let stdout = dir.join(format!("{label}.stdout"));
        let stderr = dir.join(format!("{label}.stderr"));
        let mut process = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "replicas::replica_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(LABEL, label)
            .env(URL, url)
            .env(SCHEMA, schema)
            .env(
                WATCH,
                match watch {
                    LeaseWatch::FenceOnly => "fence",
                    LeaseWatch::Heartbeat => "heartbeat",
                },
            )
            .stdin(Stdio::piped())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        let controls = process.stdin.take();
        Self {
            label: label.to_owned(),
            process,
            controls,
            stdout,
            stderr,
        }
    }

    /// What the child reported so far.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Its standard error, for failure messages.
    fn errors(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends the child `signal` (`STOP`, `CONT`, `KILL`) with `kill(1)`.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.process.id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{signal} {}", self.label);
    }

    /// Waits up to `within` for a report line containing `fact`; fails the test without.
    async fn reported(&self, fact: &str, within: Duration) -> Duration {
        let started = Instant::now();
        while !self.output().contains(fact) {
            assert!(
                started.elapsed() < within,
                "{} did not report {fact:?} within {within:?}:\n{}\n--- stderr\n{}",
                self.label,
                self.output(),
                self.errors()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        started.elapsed()
    }

    /// Waits up to `within` until the child is inside a payout it started: the run's first
    /// step has been announced in `store` and the run has not finished. Returns the run's
    /// id.
    async fn inside_a_payout(&self, store: &PostgresEventStore, within: Duration) -> String {
        let saga = payout_saga(store, Duration::ZERO).unwrap();
        let started = Instant::now();
        let before = facts(&self.output(), "payout ").len();
        loop {
            let output = self.output();
            let new = facts(&output, "payout ").split_off(before);
            let begun = new
                .iter()
                .filter_map(|line| line.strip_suffix(&format!(" started by {}", self.label)))
                .map(|begun| begun.trim_start_matches("payout ").to_owned())
                .next_back();
            if let Some(id) = begun {
                let records = store
                    .read_stream(&saga.stream_id(&id), 1, 100)
                    .await
                    .unwrap();
                let stepping = records.iter().any(|r| &*r.event_type == "SagaStepStarted");
                let finished = records
                    .iter()
                    .any(|r| matches!(&*r.event_type, "SagaCompleted" | "SagaCompensated"));
                if stepping && !finished {
                    return id;
                }
            }
            assert!(
                started.elapsed() < within,
                "{} was inside no payout within {within:?}",
                self.label
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stops the child (SIGSTOP) inside a payout it started, within `within`, and returns
    /// the run's id. It stops the child first and then checks that the run is unfinished
    /// (a run can end between a look and a signal on a loaded machine): when it finished,
    /// the child goes on (SIGCONT) and the next payout is tried.
    async fn stop_inside_a_payout(&self, store: &PostgresEventStore, within: Duration) -> String {
        let saga = payout_saga(store, Duration::ZERO).unwrap();
        let started = Instant::now();
        loop {
            let left = within.saturating_sub(started.elapsed());
            let id = self.inside_a_payout(store, left).await;
            self.signal("STOP");
            let records = store
                .read_stream(&saga.stream_id(&id), 1, 100)
                .await
                .unwrap();
            let finished = records
                .iter()
                .any(|r| matches!(&*r.event_type, "SagaCompleted" | "SagaCompensated"));
            if !finished {
                return id;
            }
            self.signal("CONT");
        }
    }

    /// Closes the child's controls and waits up to 15 s for it to exit with success.
    async fn stop(&mut self) {
        self.controls = None;
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = self.process.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within 15 s:\n{}",
                self.label,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            status.success(),
            "{} failed: {status}\n{}\n--- stderr\n{}",
            self.label,
            self.output(),
            self.errors()
        );
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // A paused process dies of SIGKILL too; continuing it first lets it be reaped at once.
        if matches!(self.process.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-CONT", &self.process.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A scratch directory for the children's reports, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The label of a lease owner (`replica-2 (pid …)` is `replica-2`).
fn label_of(owner: &str) -> &str {
    owner.split(" (").next().unwrap_or(owner)
}

/// Waits up to `within` until lease `name` has an owner other than `not`; returns its label
/// and how long that took.
async fn owner_other_than(
    store: &PostgresEventStore,
    name: &str,
    not: &str,
    within: Duration,
) -> (String, Duration) {
    let started = Instant::now();
    loop {
        let owner = store.projection_status(name).await.unwrap().owner;
        if let Some(owner) = owner.as_deref().map(label_of)
            && owner != not
        {
            return (owner.to_owned(), started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "lease {name} stayed with {not} (or none) for {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The report lines of `output` that contain `fact`, from `fact` on (the harness may print
/// the test's name before the first one).
fn facts<'a>(output: &'a str, fact: &str) -> Vec<&'a str> {
    output
        .lines()
        .filter_map(|line| line.find(fact).map(|at| &line[at..]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_through_a_pause_and_a_kill_agree_with_a_replay_and_write_only_under_their_leases()
 {
    let Some(schema) = DroppedSchema::of_its_own("replicas") else {
        return;
    };
    let url = schema.url.clone();
    let dir = Scratch(std::env::temp_dir().join(format!("flext-replicas-{}", schema.name)));
    std::fs::create_dir_all(&dir.0).unwrap();
    // Past the limit the proof's future is dropped, and with it every child (killed).
    let limit = Duration::from_secs(110);
    tokio::time::timeout(limit, proof(&url, &schema.name, &dir.0))
        .await
        .unwrap_or_else(|_| panic!("the proof took longer than {limit:?}"));
}

/// The proof itself, on `schema`, the children's reports in `dir`.
async fn proof(url: &str, schema: &str, dir: &Path) {
    let began = Instant::now();
    let store = PostgresEventStore::connect_with(
        PostgresStoreOptions::new(url)
            .with_schema(schema.to_owned())
            .with_max_connections(3),
    )
    .await
    .unwrap();
    prepare(&store).await.unwrap();
    let start = |label: &str, watch| Replica::start(label, url, schema, dir, watch);
    let bound = Duration::from_secs(20);

    // replica-1 first, so it owns both projections; it learns of a lost lease only from
    // its fences.
    let mut one = start("replica-1", LeaseWatch::FenceOnly);
    for name in [BALANCES, LEDGER] {
        one.reported(&format!("lease {name} taken by replica-1 token 1"), bound)
            .await;
    }
    let mut others = [
        start("replica-2", LeaseWatch::Heartbeat),
        start("replica-3", LeaseWatch::Heartbeat),
    ];
    for replica in &others {
        replica
            .reported(&format!("command {}/5 ", replica.label), bound)
            .await;
    }
    // Both projections have written under replica-1's leases.
    let writing = Instant::now();
    for name in [BALANCES, LEDGER] {
        while store.projection_status(name).await.unwrap().position == 0 {
            assert!(
                writing.elapsed() < bound,
                "replica-1 never wrote {name}'s checkpoint"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Paused past its leases: both move to the others within a TTL and a renewal.
    let paused_run = one.stop_inside_a_payout(&store, bound).await;
    let paused = Instant::now();
    // Only what replica-1 reports after its pause tells how it woke.
    let reported_before = one.output().len();
    let woken_output = || {
        let output = one.output();
        output.get(reported_before..).unwrap_or_default().to_owned()
    };
    let mut moved = BTreeMap::new();
    for name in [BALANCES, LEDGER] {
        let (owner, _) = owner_other_than(&store, name, "replica-1", bound).await;
        moved.insert(name, (owner, paused.elapsed()));
    }
    let pause = TTL * 3;
    tokio::time::sleep(pause.saturating_sub(paused.elapsed())).await;
    one.signal("CONT");
    // Woken, it writes on with its old fences until a write is refused (or, when it was
    // paused inside a transaction, until it finds that transaction ended by the server).
    let refused = |output: &str, name: &str| {
        facts(output, &format!("lease {name} refused replica-1 token 1:"))
            .iter()
            .any(|line| line.contains(&format!("Lease '{name}' is lost")))
    };
    let ended = |name: &str| format!("lease {name} error replica-1 token 1:");
    let woke = Instant::now();
    loop {
        let output = woken_output();
        let settled = [BALANCES, LEDGER]
            .iter()
            .all(|name| refused(&output, name) || output.contains(&ended(name)));
        if settled {
            break;
        }
        assert!(
            woke.elapsed() < bound,
            "replica-1 went on writing under its lost leases:\n{output}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Which way each lease ended for the woken replica depends on where the pause caught
    // it: outside a transaction, its next fenced write is refused; inside one (a runner's
    // batch, a checkpoint write), the server has ended that transaction after the replicas'
    // idle timeout, so a paused owner never blocks the new one. Either way it wrote nothing
    // more under the lease, which the audit below checks whichever it was.
    let refusals: Vec<&str> = [BALANCES, LEDGER]
        .into_iter()
        .filter(|name| refused(&woken_output(), name))
        .collect();

    // The owner of the balances dies mid-run; another replica takes over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let victim = label_of(
        &store
            .projection_status(BALANCES)
            .await
            .unwrap()
            .owner
            .unwrap(),
    )
    .to_owned();
    // Usually a heartbeat replica; replica-1 when it took the balances back after waking.
    let victim_of = |replicas: &mut [&mut Replica]| -> usize {
        replicas
            .iter()
            .position(|r| r.label == victim)
            .unwrap_or_else(|| panic!("{victim} owns the balances but is no replica"))
    };
    let killed_run = {
        let mut all: Vec<&mut Replica> =
            std::iter::once(&mut one).chain(others.iter_mut()).collect();
        let at = victim_of(&mut all);
        let run = all[at].stop_inside_a_payout(&store, bound).await;
        all[at].signal("KILL");
        run
    };
    let (successor, taken_over) = owner_other_than(&store, BALANCES, &victim, bound).await;
    {
        let mut all: Vec<&mut Replica> =
            std::iter::once(&mut one).chain(others.iter_mut()).collect();
        let at = victim_of(&mut all);
        let _ = all[at].process.wait();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Commands stop; the living replicas finish the payouts and catch up, then stop.
    let mut living: Vec<&mut Replica> = std::iter::once(&mut one)
        .chain(others.iter_mut())
        .filter(|r| r.label != victim)
        .collect();
    for replica in &mut living {
        writeln!(replica.controls.as_mut().unwrap(), "quiesce").unwrap();
    }
    for replica in &living {
        replica
            .reported(&format!("quiesced {} after", replica.label), bound)
            .await;
    }
    let saga = payout_saga(&store, Duration::ZERO).unwrap();
    let caught_up = Instant::now();
    loop {
        let unfinished = saga.unfinished().await.unwrap();
        let behind = store.projection_status(BALANCES).await.unwrap().behind
            + store.projection_status(LEDGER).await.unwrap().behind;
        if unfinished.is_empty() && behind == 0 {
            break;
        }
        assert!(
            caught_up.elapsed() < Duration::from_secs(30),
            "not caught up within 30 s: unfinished payouts {unfinished:?}, {behind} events behind"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for replica in &mut living {
        replica.stop().await;
    }
    drop(living);

    let outputs: BTreeMap<String, String> = std::iter::once(&one)
        .chain(others.iter())
        .map(|r| (r.label.clone(), r.output()))
        .collect();
    let head = store.head_position().await.unwrap();
    let log = store.read_all(1, usize::MAX).await.unwrap();
    assert_eq!(log.last().map(|e| e.position), Some(head));

    // Every command landed once: ids unique in the log, each reported one at its position,
    // and each living replica's count of landed commands is its count in the log.
    let deposits: Vec<(Deposit, u64)> = log
        .iter()
        .filter(|e| &*e.event_type == DEPOSITED)
        .map(|e| (e.payload.decode::<Deposit>().unwrap(), e.position))
        .collect();
    let ids: HashSet<&str> = deposits.iter().map(|(d, _)| d.command.as_str()).collect();
    assert_eq!(ids.len(), deposits.len(), "a command landed twice");
    let by_id: BTreeMap<&str, u64> = deposits
        .iter()
        .map(|(d, position)| (d.command.as_str(), *position))
        .collect();
    let mut reported = 0;
    for (label, output) in &outputs {
        for line in facts(output, "command replica-") {
            let mut words = line.split(' ');
            let id = words.nth(1).unwrap();
            if line.contains(" failed ") {
                continue;
            }
            let at: u64 = words.nth(3).unwrap().parse().unwrap();
            assert_eq!(by_id.get(id), Some(&at), "{label}: {line}");
            reported += 1;
        }
        if let Some(quiesced) = facts(output, "quiesced ").first() {
            let sent: usize = quiesced.split(' ').nth(3).unwrap().parse().unwrap();
            let logged = deposits
                .iter()
                .filter(|(d, _)| d.command.starts_with(&format!("{label}/")))
                .count();
            assert_eq!(sent, logged, "{label}: {quiesced}");
        }
    }

    // The exactly-once read model is the replay of the log, row for row.
    let balances = read_balances(&store).await.unwrap();
    assert_eq!(balances, replay_balances(&log).unwrap());

    // Every event is in the at-least-once read model, and nothing else is.
    let ledger: BTreeSet<String> = sqlx::query_scalar("SELECT event_id FROM ledger")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
    let events: BTreeSet<String> = log.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(ledger, events);

    // Every payout run finished once (one final record), and its work took effect once
    // each: what a completed run does, or what a compensated one does.
    let prefix = saga.stream_id("");
    let mut finals: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in log.iter().filter(|e| e.stream_id.starts_with(&prefix)) {
        let run = event.stream_id[prefix.len()..].to_owned();
        let entry = finals.entry(run).or_default();
        if matches!(&*event.event_type, "SagaCompleted" | "SagaCompensated") {
            entry.push(event.event_type.to_string());
        }
    }
    let effects: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT run, work, attempts FROM payout_effects")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let mut work: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (run, done, _) in &effects {
        assert!(
            work.entry(run).or_default().insert(done),
            "{run} {done} twice"
        );
    }
    let (mut completed, mut compensated) = (0, 0);
    for (run, ends) in &finals {
        let expected: BTreeSet<&str> = match ends.as_slice() {
            [end] if end == "SagaCompleted" => {
                completed += 1;
                COMPLETED_WORK.into_iter().collect()
            }
            [end] if end == "SagaCompensated" => {
                compensated += 1;
                COMPENSATED_WORK.into_iter().collect()
            }
            _ => panic!("payout {run} ended {ends:?}"),
        };
        assert_eq!(
            work.remove(run.as_str()).unwrap_or_default(),
            expected,
            "payout {run}"
        );
    }
    assert!(work.is_empty(), "effects of runs never started: {work:?}");
    assert!(
        completed > 0 && compensated > 0,
        "{completed} completed, {compensated} compensated"
    );
    let repeats: i32 = effects.iter().map(|(_, _, attempts)| attempts - 1).sum();
    // The runs the paused and the killed replica were inside of were resumed by another
    // replica (a second may take the lease once the first gave it up, find the run
    // finished and run nothing: the effects above count each piece of work once); the
    // paused one, woken, was turned away from its run.
    for (run, left_by) in [(&paused_run, "replica-1"), (&killed_run, victim.as_str())] {
        let resumers: Vec<&str> = outputs
            .values()
            .flat_map(|output| facts(output, &format!("payout {run} resumed ")))
            .filter(|line| !line.ends_with(&format!(" by {left_by}")))
            .collect();
        let story: Vec<&str> = outputs
            .values()
            .flat_map(|output| facts(output, &format!("payout {run} ")))
            .collect();
        assert!(
            !resumers.is_empty(),
            "payout {run} left by {left_by} was not resumed elsewhere: {story:?}"
        );
    }
    let turned_away = format!("payout {paused_run} error CONCURRENCY_CONFLICT by replica-1");
    assert!(
        outputs["replica-1"].contains(&turned_away),
        "{}",
        outputs["replica-1"]
    );

    // Every checkpoint write was made under the lease then current.
    let audit = audited(&store).await;
    assert_eq!(unleased_writes(&audit), Vec::<String>::new());
    let mut writers: BTreeMap<&str, BTreeSet<(String, i64)>> = BTreeMap::new();
    for (name, _, _, _, owner, token, _) in &audit {
        let owner = label_of(owner.as_deref().unwrap_or("none")).to_owned();
        writers
            .entry(name)
            .or_default()
            .insert((owner, token.unwrap_or(0)));
    }
    // Both were written by replica-1 before its pause and by another owner after it; the
    // balances once more after the kill.
    for (name, owners) in [(BALANCES, 3), (LEDGER, 2)] {
        let seen = &writers[name];
        assert!(
            seen.contains(&("replica-1".to_owned(), 1)),
            "{name}: {seen:?}"
        );
        assert!(seen.len() >= owners, "{name}: {seen:?}");
    }

    println!(
        "replicas: {} events ({} deposits, {reported} reported), {} payouts ({completed} completed, \
         {compensated} compensated, {repeats} repeated tries absorbed; {paused_run} and {killed_run} \
         resumed elsewhere), {} audited checkpoint \
         writes; paused replica-1: balances moved to {} after {:.2} s, ledger to {} after \
         {:.2} s, refused on waking: {refusals:?}; killed {victim}: balances moved to \
         {successor} after {:.2} s; whole test {:.1} s",
        log.len(),
        deposits.len(),
        finals.len(),
        audit.len(),
        moved[BALANCES].0,
        moved[BALANCES].1.as_secs_f64(),
        moved[LEDGER].0,
        moved[LEDGER].1.as_secs_f64(),
        taken_over.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    // A lease moves within a TTL and a renewal (1.33 s here); the bound leaves room for a
    // loaded machine.
    for (name, (_, after)) in &moved {
        assert!(*after < TTL * 5, "{name} took {after:?} to move");
    }
    assert!(
        taken_over < TTL * 5,
        "the balances took {taken_over:?} to move"
    );

    // The audit catches a write made without the lease: replica-1 saving the balances'
    // checkpoint straight to the store, unfenced, once every lease was given up.
    let unfenced = PostgresEventStore::connect_with(
        PostgresStoreOptions::new(format!(
            "{url}{}options[replicas.writer]=replica-1",
            if url.contains('?') { '&' } else { '?' }
        ))
        .with_schema(schema.to_owned())
        .with_max_connections(1),
    )
    .await
    .unwrap();
    let checkpoint = unfenced.load_checkpoint(BALANCES).await.unwrap().unwrap();
    unfenced
        .save_checkpoint(BALANCES, checkpoint)
        .await
        .unwrap();
    let caught = unleased_writes(&audited(&store).await);
    assert_eq!(caught.len(), 1, "{caught:?}");
    assert!(caught[0].starts_with("balances written at"), "{caught:?}");
}

/// One checkpoint write as the audit trigger recorded it: the checkpoint's name and
/// position, the writer and the fencing token it said it wrote with, the lease's owner and
/// token then, and whether the lease was unexpired.
type Audit = (
    String,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    bool,
);

/// Every checkpoint write, in the order they were made.
async fn audited(store: &PostgresEventStore) -> Vec<Audit> {
    sqlx::query_as(
        "SELECT name, position, writer, writer_token, lease_owner, lease_token, lease_live \
         FROM checkpoint_audit ORDER BY id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// The writes of `audit` not made under the lease then current: a write while the lease
/// was expired, by another than its owner, (for the balances) with another token than the
/// lease's, or with a lower token or at a lower position than the write before.
fn unleased_writes(audit: &[Audit]) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut last: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for row in audit {
        let (name, position, writer, writer_token, owner, token, live) = row;
        let (owner, token) = (owner.as_deref().unwrap_or("none"), token.unwrap_or(0));
        let (last_token, last_position) = last.entry(name).or_insert((0, 0));
        let why = if !live {
            "no lease was live"
        } else if writer.as_deref() != Some(label_of(owner)) {
            "the writer did not own the lease"
        } else if name == BALANCES && *writer_token != Some(token) {
            "the writer's token was not the lease's"
        } else if token < *last_token || position < last_position {
            "the token or the position went back"
        } else {
            ""
        };
        if !why.is_empty() {
            wrong.push(format!("{name} written at {position}: {why}: {row:?}"));
        }
        (*last_token, *last_position) = (token, *position);
    }
    wrong
}
