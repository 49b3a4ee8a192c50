//! `examples/nats_bank.rs` as two processes: the writer (PostgreSQL + NATS) serves the bank's
//! commands and relays its events to JetStream; the projector sends it commands and
//! consumes the events into its read model. The test reads what both print, checks the
//! writer's store and the stream, and removes what the run created on both servers (the
//! schema, the streams), however it ends. It runs when `FLEXT_TEST_POSTGRES_URL` and
//! `FLEXT_TEST_NATS_URL` are set.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flext_examples::nats_bank::BankNames;
use flext_handlers::nats::async_nats::{self, jetstream};
use flext_handlers::prelude::*;
use flext_handlers::stores::{PostgresEventStore, PostgresStoreOptions};

use crate::saga_processes::{DroppedSchema, clean_up_aside};

/// How long a process of the example may run before it is killed and the test fails.
const PROCESS_DEADLINE: Duration = Duration::from_secs(90);

/// The example's program, as `cargo test` built it next to this test binary
/// (`target/{profile}/examples`). When it is missing, or older than the example's sources
/// (`cargo test --test it` builds no examples), it is built first, once per test process.
/// It is not built every time: `cargo build` unifies the dependencies' features without
/// the dev-dependencies, so it would rebuild what `cargo test` just built.
fn example_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test binary has a path");
            // `target/{profile}/deps/it-…`
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("the test binary is in target/{profile}/deps");
            let binary = profile_dir
                .join("examples")
                .join(format!("nats_bank{}", std::env::consts::EXE_SUFFIX));
            let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let sources = Path::new(env!("CARGO_MANIFEST_DIR"));
            let fresh = modified(&binary).is_some_and(|built| {
                ["nats_bank.rs", "src/nats_bank.rs"]
                    .iter()
                    .all(|source| modified(&sources.join(source)).is_some_and(|m| m <= built))
            });
            if !fresh {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
                let mut build = Command::new(cargo);
                build
                    .args(["build", "--quiet", "--example", "nats_bank"])
                    .current_dir(sources);
                if profile_dir
                    .file_name()
                    .is_some_and(|name| name == "release")
                {
                    build.arg("--release");
                }
                let status = build.status().expect("cargo can be started");
                assert!(status.success(), "the example builds");
            }
            binary
        })
        .clone()
}

/// The example run with `args`, neither the example's nor the tests' URLs in its
/// environment but those given.
fn example(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary);
    command.args(args);
    for name in [
        "FLEXT_EXAMPLE_POSTGRES_URL",
        "FLEXT_EXAMPLE_NATS_URL",
        "FLEXT_TEST_POSTGRES_URL",
        "FLEXT_TEST_NATS_URL",
        "FLEXT_EXAMPLE_RUN_ID",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command
}

/// A started process of the example, its standard output going to a file: killed and
/// reaped when dropped, and the file removed.
struct Running {
    process: Child,
    stdin: Option<ChildStdin>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    fn start(mut command: Command, name: &str) -> Self {
        let base = std::env::temp_dir().join(format!(
            "flext-nats-bank-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let stdout = base.with_extension("out");
        let stderr = base.with_extension("err");
        let mut process = command
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&stdout).expect("the temp directory is writable"))
            .stderr(std::fs::File::create(&stderr).expect("the temp directory is writable"))
            .spawn()
            .expect("the example starts");
        let stdin = process.stdin.take();
        Self {
            process,
            stdin,
            stdout,
            stderr,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the output has a line beginning with `prefix`.
    fn wait_for_line(&mut self, prefix: &str) {
        let started = Instant::now();
        loop {
            if self.stdout().lines().any(|line| line.starts_with(prefix)) {
                return;
            }
            if let Ok(Some(status)) = self.process.try_wait() {
                panic!(
                    "the process ended ({status}) before printing {prefix:?}:\n{}\n--- stderr\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            assert!(
                started.elapsed() < PROCESS_DEADLINE,
                "no {prefix:?} within {PROCESS_DEADLINE:?}:\n{}\n--- stderr\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Closes its standard input and waits for it to end; its output.
    fn finish(&mut self) -> Output {
        self.stdin = None;
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self
                .process
                .try_wait()
                .expect("the process can be waited on")
            {
                break status;
            }
            assert!(
                started.elapsed() < PROCESS_DEADLINE,
                "the process did not end within {PROCESS_DEADLINE:?}:\n{}\n--- stderr\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Output {
            status,
            stdout: self.stdout().into_bytes(),
            stderr: self.stderr().into_bytes(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_file(&self.stdout);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// The JetStream streams of a run, deleted when this is dropped, however the test ends.
struct DeletedStreams {
    url: String,
    names: Vec<String>,
}

impl Drop for DeletedStreams {
    fn drop(&mut self) {
        let (url, names) = (self.url.clone(), self.names.clone());
        clean_up_aside(
            &format!("delete the streams {:?}", self.names),
            async move {
                let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
                let jetstream = jetstream::new(client);
                for name in &names {
                    // A stream the run did not get to create is not an error here.
                    let _ = jetstream.delete_stream(name).await;
                }
                Ok(())
            },
        );
    }
}

/// The part of `line` after `marker`, up to the next space.
fn word_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let (_, rest) = line.split_once(marker)?;
    rest.split(' ').next()
}

#[test]
fn nats_bank_writer_and_projector_show_remote_commands_and_the_read_model() {
    let Ok(nats_url) = std::env::var("FLEXT_TEST_NATS_URL") else {
        eprintln!("skipped: FLEXT_TEST_NATS_URL is not set");
        return;
    };
    let Some(schema) = DroppedSchema::of_its_own("nats_bank") else {
        return;
    };
    let started = Instant::now();
    let binary = example_binary();
    let built = started.elapsed();
    let run = format!(
        "t{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 1_000_000_000
    );
    let names = BankNames::new(run.clone()).unwrap();
    let _streams = DeletedStreams {
        url: nats_url.clone(),
        names: vec![names.stream(), format!("{}_DLQ", names.stream())],
    };
    let env = [
        ("FLEXT_EXAMPLE_POSTGRES_URL", schema.url.as_str()),
        ("FLEXT_EXAMPLE_NATS_URL", nats_url.as_str()),
    ];

    let mut writer = Running::start(
        example(
            &binary,
            &[
                "writer",
                "--run",
                &run,
                "--schema",
                &schema.name,
                "--until-stdin-closes",
                "--for-secs",
                "120",
            ],
            &env,
        ),
        "writer",
    );
    writer.wait_for_line("writer ready: ");
    let mut projector = Running::start(
        example(&binary, &["projector", "--run", &run], &env[1..]),
        "projector",
    );
    let projected = projector.finish();
    let out = String::from_utf8_lossy(&projected.stdout).into_owned();
    assert!(
        projected.status.success(),
        "{out}\n--- stderr\n{}\n--- writer\n{}",
        String::from_utf8_lossy(&projected.stderr),
        writer.stdout()
    );
    for expected in [
        format!("events in JetStream stream {}", names.stream()),
        "Deposit acct-1 +1000 -> balance 1000 (version 1)".to_owned(),
        "Deposit acct-2 +250 -> balance 250 (version 1)".to_owned(),
        "Withdraw acct-1 -300 -> balance 700 (version 2)".to_owned(),
        // Refused by the caller's bus: the transport sent nothing.
        "Deposit acct-1 +0 -> VALIDATION_ERROR: Deposit: the amount must be positive, got 0"
            .to_owned(),
        "calls sent to the writer: 3 before, 3 after".to_owned(),
        // Refused by the writer's account, with its code and data.
        "Withdraw acct-2 -251 -> BUSINESS_RULE_VIOLATION: Insufficient funds: the balance is \
         250, the withdrawal 251"
            .to_owned(),
        "code BusinessRuleViolation, data {\"balance\":250,\"requested\":251}".to_owned(),
        "one effect: the retry got the original result and stored nothing".to_owned(),
        // The read model, from the stream: the retried deposit counted once.
        "acct-1: balance 700 (2 events, version 2)".to_owned(),
        "acct-2: balance 250 (1 event, version 1)".to_owned(),
        "acct-3: balance 500 (1 event, version 1)".to_owned(),
        "The balances match the writer's answers.".to_owned(),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    let retried: Vec<&str> = out
        .lines()
        .filter(|line| line.contains("Deposit acct-3 +500 message "))
        .collect();
    assert_eq!(retried.len(), 2, "{out}");
    let message = word_after(retried[0], "message ").unwrap();
    assert_eq!(word_after(retried[1], "message "), Some(message), "{out}");
    assert!(
        retried
            .iter()
            .all(|line| line.ends_with("-> balance 500 (version 1)")),
        "{out}"
    );

    // The writer handled both sends of the retried deposit, under the caller's message id,
    // and never saw the invalid one.
    let written = writer.finish();
    let log = String::from_utf8_lossy(&written.stdout).into_owned();
    assert!(
        written.status.success(),
        "{log}\n--- stderr\n{}",
        String::from_utf8_lossy(&written.stderr)
    );
    assert_eq!(
        log.matches(&format!(
            "handled Deposit acct-3 +500 message {message} -> balance 500 version 1"
        ))
        .count(),
        2,
        "{log}"
    );
    assert!(
        log.contains("handled Withdraw acct-2 -251 message ")
            && log.contains("-> BUSINESS_RULE_VIOLATION"),
        "{log}"
    );
    assert!(!log.contains("+0 "), "{log}");
    assert!(
        log.contains("writer stopped: relay checkpoint at position "),
        "{log}"
    );

    // One effect in the store, and the store's four events in the stream.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = PostgresEventStore::connect_with(
            PostgresStoreOptions::new(schema.url.clone()).with_schema(schema.name.clone()),
        )
        .await
        .unwrap();
        for (stream, version) in [
            ("Account-acct-1", 2),
            ("Account-acct-2", 1),
            ("Account-acct-3", 1),
        ] {
            assert_eq!(
                store.stream_version(stream).await.unwrap(),
                version,
                "{stream}"
            );
        }
        let client = async_nats::connect(nats_url.as_str()).await.unwrap();
        let jetstream = jetstream::new(client);
        let mut stream = jetstream.get_stream(names.stream()).await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 4);
        // The projector deleted its durable consumer.
        assert_eq!(stream.info().await.unwrap().state.consumer_count, 0);
    });
    eprintln!(
        "nats_bank: built in {:.1} s, writer and projector ran in {:.1} s",
        built.as_secs_f64(),
        (started.elapsed() - built).as_secs_f64()
    );
}

#[test]
fn nats_bank_without_urls_says_what_it_needs_and_runs_nothing() {
    let binary = example_binary();
    for (args, needed, not_needed) in [
        (&[][..], "FLEXT_EXAMPLE_POSTGRES_URL", None),
        (&["writer"][..], "FLEXT_EXAMPLE_POSTGRES_URL", None),
        (&["writer"][..], "FLEXT_EXAMPLE_NATS_URL", None),
        (
            &["projector"][..],
            "FLEXT_EXAMPLE_NATS_URL",
            Some("FLEXT_EXAMPLE_POSTGRES_URL"),
        ),
    ] {
        let output = example(&binary, args, &[]).output().unwrap();
        let out = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?}: {out}");
        assert!(
            out.contains(&format!("Set {needed}")) || out.contains(&format!("and {needed}")),
            "{args:?}: {out}"
        );
        assert!(out.contains("Nothing was run."), "{args:?}: {out}");
        if let Some(other) = not_needed {
            assert!(!out.contains(other), "{args:?}: {out}");
        }
    }
}

#[test]
fn nats_bank_rejects_a_bad_argument_naming_it() {
    let binary = example_binary();
    let urls = [
        "--url",
        "postgres://127.0.0.1:1/none",
        "--nats-url",
        "nats://127.0.0.1:1",
    ];
    for (args, expected) in [
        (&["projector", "--run", "a.b"][..], "--run: "),
        (&["writer", "--for-secs", "soon"][..], "--for-secs \"soon\""),
        (&["reader"][..], "unknown argument \"reader\""),
        (&[][..], "name the process to run: writer or projector"),
    ] {
        let output = example(&binary, &[args, &urls[..]].concat(), &[])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}: nothing runs");
    }
}
