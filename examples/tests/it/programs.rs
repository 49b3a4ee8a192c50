//! The example programs run and print the guide's outcomes (what the README promises).

use std::process::Command;

/// Runs `cargo run --example <name> -- <args>` from the workspace.
fn example_output(name: &str, args: &[&str]) -> std::process::Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    Command::new(cargo)
        .args(["run", "--quiet", "--example", name, "--"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo can be started")
}

/// Runs `cargo run --example <name>` from the workspace and returns its standard output.
fn run_example(name: &str) -> String {
    run_example_with(name, &[])
}

/// Runs the example with arguments; it must succeed. Returns its standard output.
fn run_example_with(name: &str, args: &[&str]) -> String {
    let output = example_output(name, args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "example {name} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn quickstart_configures_for_production_and_reports_full_success() {
    let out = run_example("quickstart");
    assert!(out.contains("Handler configured for production"), "{out}");
    assert!(out.contains("Request processed successfully:"), "{out}");
    assert!(out.contains("\"action\":\"create_user\""), "{out}");
    assert!(out.contains("Success rate: 100.0%"), "{out}");
    assert!(out.contains("Average response time: "), "{out}");
    assert!(out.contains("Handler state: completed"), "{out}");
}

#[test]
fn quickstart_runs_the_guides_cqrs_flow() {
    let out = run_example("quickstart");
    for expected in [
        "✅ User created: user_1",
        "🔔 Welcome notification sent to Alice Johnson",
        "Event UserCreated delivered to 1 subscriber(s)",
        "✅ User retrieved: Alice Johnson in Engineering",
        "Email (with details): alice@company.com",
        "Email (without details): hidden",
        "❌ Rejected: Name must be at least 2 characters (VALIDATION_ERROR)",
        "Command bus: 2 processed, 1 successful, 1 failed",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert_eq!(
        out.matches("Welcome notification").count(),
        1,
        "the welcome handler runs once"
    );
}

#[test]
fn order_processing_prints_the_guides_outcomes() {
    let out = run_example("order_processing");
    for expected in [
        "Order processed: order_1 ($850.00)",
        "Status: pending",
        "Order processed: order_2 ($1500.00)",
        "Status: requires_approval",
        "High-value order requires manager approval",
        "Order processed: order_3 ($356.25)",
        "Bulk discount applied (5%)",
        "Order failed: Order must contain items",
        "Total orders: 3",
        "Total revenue: $2706.25",
        "Average order value: $902.08",
        "Orders requiring approval: 1",
        "4 processed, 3 successful, 1 failed",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn event_sourcing_prints_the_guides_outcomes() {
    let out = run_example("event_sourcing");
    assert_guide_event_sourcing_outcomes(&out, 1);
    assert!(
        !out.contains("Event store:"),
        "memory is the quiet default:\n{out}"
    );
}

/// The guide's event-sourcing outcomes after the program ran `runs` times on one store:
/// the read model, rebuilt from the whole history, counts every run's users.
fn assert_guide_event_sourcing_outcomes(out: &str, runs: usize) {
    let total_line = format!("Total events in store: {}", 5 * runs);
    let departments = ["Engineering", "Senior Engineering", "Sales", "Marketing"]
        .map(|department| format!("   {department}: {runs} users\n"));
    for expected in departments.iter().map(String::as_str).chain([
        "✅ Created user: Alice Johnson -> user_",
        "✅ Created user: David Wilson -> user_",
        "📊 User projection created: Carol Davis in Engineering",
        "📊 User projection updated: Alice Johnson",
        "in Senior Engineering",
        "in Sales",
        total_line.as_str(),
        "Event types: {\"UserCreated\", \"UserUpdated\"}",
        "- UserCreated (v1) at ",
        "- UserUpdated (v2) at ",
    ]) {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert_eq!(out.matches("✅ Created user:").count(), 4);
}

/// A scratch directory for one test, removed when dropped.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "flext-examples-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("the clock is after 1970")
                .as_nanos()
        ));
        std::fs::create_dir_all(&path).expect("the temp directory is writable");
        Self(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn event_sourcing_on_sqlite_keeps_history_across_runs() {
    let dir = ScratchDir::new("sqlite");
    let flag = format!("--store=sqlite:{}", dir.0.join("events.db").display());

    let first = run_example_with("event_sourcing", &[&flag]);
    assert!(first.contains("Event store: SQLite at "), "{first}");
    assert_guide_event_sourcing_outcomes(&first, 1);

    // A second process finds the first one's events and rebuilds the read model from them.
    let second = run_example_with("event_sourcing", &[&flag]);
    assert_guide_event_sourcing_outcomes(&second, 2);
    assert!(
        second.contains("Projection applied 10 events (checkpoint 10)"),
        "{second}"
    );
}

#[test]
fn event_sourcing_on_postgres_has_the_guides_outcomes() {
    let Ok(url) = std::env::var("FLEXT_TEST_POSTGRES_URL") else {
        eprintln!("skipped: FLEXT_TEST_POSTGRES_URL is not set");
        return;
    };
    let schema = format!("example_{}", std::process::id());
    let flag = format!("--store=postgres:{url}#{schema}");
    let out = run_example_with("event_sourcing", &[&flag]);
    assert!(out.contains(&format!("schema {schema}")), "{out}");
    assert_guide_event_sourcing_outcomes(&out, 1);
}

#[test]
fn event_sourcing_rejects_a_bad_store_flag_naming_it() {
    for (args, expected) in [
        (
            &["--store", "mongo:x"][..],
            "--store \"mongo:x\": unknown store",
        ),
        (&["--store", "sqlite:"][..], "the SQLite path is empty"),
        (
            &["--store", "postgres:mysql://x"][..],
            "must start with postgres://",
        ),
        (&["--store"][..], "--store needs a value"),
        (&["--verbose"][..], "unknown argument \"--verbose\""),
    ] {
        let output = example_output("event_sourcing", args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}: nothing runs");
    }
}

#[test]
fn event_sourcing_reports_an_unreachable_store_without_its_password() {
    let output = example_output(
        "event_sourcing",
        &["--store=postgres:postgres://app:s3cret@127.0.0.1:1/none"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot open the event store"), "{stderr}");
    assert!(
        stderr.contains("the server at 127.0.0.1:1 refused the connection"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[test]
fn enterprise_chain_prints_the_guides_outcomes() {
    let out = run_example("enterprise_chain");
    for expected in [
        "--- Request 1: delete at /api/users/123 ---",
        "Status: deleted",
        "Resource: user_123",
        "Status: created",
        "Status: success",
        "User: user_003",
        "❌ Enterprise chain failed: Handler 'authorizer' failed: User user_003 lacks permission 'delete' for operation 'delete'",
        "❌ Enterprise chain failed: Handler 'authenticator' failed: Authentication token required",
        "❌ Enterprise chain failed: Handler 'validator' failed: Invalid operation 'invalid_op'",
        "   - Total requests: 6",
        "   - Successful: 3",
        "   - Failed: 3",
        "   - Attempts: 6",
        "   - Checks: 5",
        "   - Denied: 1",
        "   - Validations: 4",
        "   - Processed: 3",
        "   - Errors: 0",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn handler_management_prints_the_guides_outcomes() {
    let out = run_example("handler_management");
    for expected in [
        "✅ Successfully registered 4 handlers",
        "✅ Handler user_validator executed successfully",
        "✅ Handler admin_authorizer executed successfully",
        "✅ Handler data_processor executed successfully",
        "✅ Handler order_processor executed successfully",
        "   id: \"order_1\"",
        "   total_amount: 200.0",
        "   status: \"pending\"",
        "   Total handlers: 4",
        "   Active: 4",
        "   Idle: 0",
        "   With errors: 0",
        "   Total requests processed: 4",
        "   Cleaned up handlers: [",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn order_saga_prints_its_three_outcomes() {
    let out = run_example("order_saga");
    for expected in [
        "✅ order-1 completed: reservation res-order-1, payment pay-order-1, tracking trk-order-1",
        "↩️  order-2 compensated: charge_payment failed (card …0002 declined); undone: reserve_inventory",
        "released 3 × WIDGET for order-2 (res-order-2)",
        "WIDGET in stock: 8",
        "💥 first process stopped: power cut: the process died before recording its progress",
        "🔁 restarted; unfinished runs: [\"order-3\"]",
        "✅ order-3 completed: reservation res-order-3, payment pay-order-3, tracking trk-order-3",
        "card charges for order-3: 1",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert_eq!(out.matches("charged $150.00").count(), 1, "{out}");
}

/// Runs `cargo run --example replicas` with `FLEXT_EXAMPLE_POSTGRES_URL` set to `url`, or
/// with neither PostgreSQL variable set.
fn replicas_output(url: Option<&str>) -> std::process::Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .args(["run", "--quiet", "--example", "replicas"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("FLEXT_TEST_POSTGRES_URL")
        .env_remove("FLEXT_EXAMPLE_POSTGRES_URL");
    if let Some(url) = url {
        command.env("FLEXT_EXAMPLE_POSTGRES_URL", url);
    }
    command.output().expect("cargo can be started")
}

#[test]
fn replicas_shows_the_leases_moving_when_their_owner_is_killed() {
    let Ok(url) = std::env::var("FLEXT_TEST_POSTGRES_URL") else {
        eprintln!("skipped: FLEXT_TEST_POSTGRES_URL is not set");
        return;
    };
    let output = replicas_output(Some(&url));
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{out}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "lease balances taken by replica-",
        "balances is owned by replica-",
        "the owner of balances, on the spot (SIGKILL)",
        "0 behind",
        "quiesced replica-",
        "lease balances released by replica-",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // The lease moved to another replica within its TTL and a renewal (1.5 s + 0.5 s),
    // give or take a busy machine's second.
    let moved = out
        .lines()
        .find_map(|line| line.trim().strip_prefix("lease balances moved from "))
        .unwrap_or_else(|| panic!("the lease did not move:\n{out}"));
    let (from, rest) = moved.split_once(" to ").unwrap();
    let (to, rest) = rest.split_once(" in ").unwrap();
    assert_ne!(from, to, "{out}");
    let seconds: f64 = rest.split(' ').next().unwrap().parse().unwrap();
    assert!(seconds < 3.0, "{out}");
    assert!(
        out.contains(&format!("Stopping {from}, the owner of balances")),
        "{out}"
    );
    assert!(out.contains("Schema replicas_demo_"), "{out}");
    assert!(out.contains(" dropped."), "{out}");
}

#[test]
fn replicas_without_postgres_says_what_it_needs_and_runs_nothing() {
    let output = replicas_output(None);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("set FLEXT_EXAMPLE_POSTGRES_URL"), "{out}");
    assert!(out.contains("Nothing was run."), "{out}");
    assert!(!out.contains("replica-"), "{out}");
}

/// One span printed by the OpenTelemetry stdout exporter: its name, ids and attributes.
#[derive(Debug, Default)]
struct ExportedSpan {
    name: String,
    trace_id: String,
    span_id: String,
    parent: Option<String>,
    attributes: std::collections::BTreeMap<String, String>,
}

/// The spans the stdout exporter printed in `out` (each block starts at `Span #`).
fn exported_spans(out: &str) -> Vec<ExportedSpan> {
    let mut spans: Vec<ExportedSpan> = Vec::new();
    for line in out.lines() {
        let line = line.trim();
        if line.starts_with("Span #") {
            spans.push(ExportedSpan::default());
            continue;
        }
        let Some(span) = spans.last_mut() else {
            continue;
        };
        if let Some((key, value)) = line.split_once(':') {
            let value = value.trim();
            match key.trim() {
                "Name" if span.name.is_empty() && !value.starts_with('"') => {
                    span.name = value.to_owned()
                }
                "TraceId" => span.trace_id = value.to_owned(),
                "SpanId" => span.span_id = value.to_owned(),
                "ParentSpanId" if !value.starts_with("None") => {
                    span.parent = Some(value.to_owned())
                }
                _ => {}
            }
        }
        // Attributes: `->  key: String(Owned("value"))`.
        if let Some(attribute) = line.strip_prefix("->")
            && let Some((key, value)) = attribute.trim().split_once(": ")
            && let Some(text) = value
                .strip_prefix("String(Owned(\"")
                .and_then(|v| v.strip_suffix("\"))"))
        {
            span.attributes.insert(key.to_owned(), text.to_owned());
        }
    }
    spans
}

/// What a handler of the `tracing_otel` example printed: its ids and trace id by name.
fn handler_line(out: &str, handler: &str) -> std::collections::BTreeMap<String, String> {
    let line = out
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{handler}: ")))
        .unwrap_or_else(|| panic!("no line of {handler} in:\n{out}"));
    line.split(' ')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn tracing_otel_exports_one_trace_with_the_ids_the_handlers_saw() {
    let out = run_example("tracing_otel");
    assert!(
        out.contains("order order-1 placed: 3 item(s) reserved, 1 subscriber(s) told"),
        "{out}"
    );
    let spans = exported_spans(&out);
    let dispatches: Vec<&ExportedSpan> = spans
        .iter()
        .filter(|s| s.name == "flext.dispatch")
        .collect();
    assert_eq!(dispatches.len(), 3, "{spans:#?}");
    let of = |message_type: &str| {
        *dispatches
            .iter()
            .find(|s| s.attributes.get("message_type").map(String::as_str) == Some(message_type))
            .unwrap_or_else(|| panic!("no span of {message_type}: {dispatches:#?}"))
    };
    let (order, stock, placed) = (of("PlaceOrder"), of("ReserveStock"), of("OrderPlaced"));
    assert_eq!(order.attributes["kind"], "command");
    assert_eq!(placed.attributes["kind"], "event");

    // One trace: the order's span is its root, the nested dispatches its children.
    let trace = &order.trace_id;
    assert_eq!(trace.len(), 32, "{order:?}");
    assert!(spans.iter().all(|s| &s.trace_id == trace), "{spans:#?}");
    assert_eq!(order.parent, None);
    assert_eq!(stock.parent.as_ref(), Some(&order.span_id));
    assert_eq!(placed.parent.as_ref(), Some(&order.span_id));

    // Each span carries the ids its handler saw, inside that trace.
    for (span, handler) in [
        (order, "place_order"),
        (stock, "reserve_stock"),
        (placed, "mailer"),
    ] {
        let seen = handler_line(&out, handler);
        assert_eq!(&seen["trace_id"], trace, "{handler}");
        assert_eq!(
            span.attributes["message_id"], seen["message_id"],
            "{handler}"
        );
        assert_eq!(
            span.attributes["correlation_id"], seen["correlation_id"],
            "{handler}"
        );
        let causation = span
            .attributes
            .get("causation_id")
            .map_or("-", String::as_str);
        assert_eq!(causation, seen["causation_id"], "{handler}");
    }
    // The conversation: one correlation id, the order as the cause of the rest.
    let order_id = &order.attributes["message_id"];
    assert_eq!(&order.attributes["correlation_id"], order_id);
    for child in [stock, placed] {
        assert_eq!(&child.attributes["correlation_id"], order_id);
        assert_eq!(&child.attributes["causation_id"], order_id);
    }
}
