//! The example programs run and print the guide's outcomes (what the README promises).

use std::process::Command;

/// Runs `cargo run --example <name>` from the workspace and returns its standard output.
fn run_example(name: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["run", "--quiet", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo can be started");
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
    for expected in [
        "✅ Created user: Alice Johnson -> user_",
        "✅ Created user: David Wilson -> user_",
        "📊 User projection created: Carol Davis in Engineering",
        "📊 User projection updated: Alice Johnson",
        "in Senior Engineering",
        "in Sales",
        "   Engineering: 1 users",
        "   Senior Engineering: 1 users",
        "   Sales: 1 users",
        "   Marketing: 1 users",
        "Total events in store: 5",
        "Event types: {\"UserCreated\", \"UserUpdated\"}",
        "- UserCreated (v1) at ",
        "- UserUpdated (v2) at ",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert_eq!(out.matches("✅ Created user:").count(), 4);
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
