//! Each endpoint's status codes, content types and bodies, and the answers to bad requests.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flext_admin::{Admin, PROMETHEUS_CONTENT_TYPE, ServeConfig};

use crate::client::{get, request, serve};
use crate::service::Service;

#[tokio::test]
async fn every_endpoint_answers_with_its_content_type() {
    let service = Service::new();
    service.traffic(4).await;
    let server = serve(&service.admin).await;
    let addr = server.local_addr();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_eq!(server.url(), format!("http://{addr}/"));

    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.body.contains("<title>flext admin</title>"));
    // Self-contained: nothing is loaded from another origin.
    for outside in ["src=\"http", "href=\"http", "//cdn", "@import"] {
        assert!(!page.body.contains(outside), "the page refers to {outside}");
    }
    assert!(
        page.header("content-security-policy")
            .is_some_and(|csp| csp.contains("default-src 'none'"))
    );

    let handlers = get(addr, "/handlers").await;
    assert_eq!(
        (handlers.status, handlers.header("content-type")),
        (200, Some("application/json"))
    );
    let handlers = handlers.json();
    let names: Vec<&str> = handlers["handlers"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|h| h["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["charge_card", "create_user"]);
    let charge = &handlers["handlers"][0];
    assert_eq!(
        (
            charge["requests_processed"].as_u64(),
            charge["failed_requests"].as_u64()
        ),
        (Some(4), Some(2))
    );
    assert_eq!(charge["error_rate"].as_f64(), Some(50.0));
    assert_eq!(charge["latency"]["count"].as_u64(), Some(4));
    assert_eq!(handlers["registry"]["total_handlers"].as_u64(), Some(2));
    let registered_at = charge["registered_at"].as_str().expect("a time");
    assert!(
        time::OffsetDateTime::parse(
            registered_at,
            &time::format_description::well_known::Rfc3339
        )
        .is_ok(),
        "{registered_at}"
    );
    let mean_ms = charge["latency"]["mean_ms"].as_f64().expect("a mean");
    // A call takes more than 10 ns and much less than 100 ms.
    assert!(mean_ms > 1e-5 && mean_ms < 100.0, "{mean_ms} ms");

    let breakers = get(addr, "/breakers").await.json();
    assert_eq!(breakers["breakers"][0]["name"], "payments");
    assert_eq!(breakers["breakers"][0]["state"], "CLOSED");
    service.breaker.transition_to_open().expect("opens");
    let breakers = get(addr, "/breakers").await.json();
    assert_eq!(breakers["breakers"][0]["state"], "OPEN");
    assert_eq!(breakers["breakers"][0]["transitions"].as_u64(), Some(1));
    assert_eq!(
        breakers["breakers"][0]["recent_transitions"][0]["from"],
        "CLOSED"
    );
    assert_eq!(
        breakers["breakers"][0]["recent_transitions"][0]["to"],
        "OPEN"
    );

    let projections = get(addr, "/projections").await.json();
    let balances = &projections["projections"][0];
    assert_eq!(
        (
            balances["name"].as_str(),
            balances["position"].as_u64(),
            balances["head"].as_u64()
        ),
        (Some("balances"), Some(40), Some(42))
    );
    assert_eq!(
        (balances["lag"].as_u64(), balances["owner"].as_str()),
        (Some(2), Some("replica-1"))
    );

    let sources = get(addr, "/sources").await.json();
    assert_eq!(sources["sources"][0]["source"], "command_bus");

    let history = get(addr, "/history?since=0").await;
    assert_eq!(history.status, 200);
    let history = history.json();
    assert_eq!(history["interval_ms"].as_u64(), Some(1000));
    assert_eq!(history["window_ms"].as_u64(), Some(600_000));
    assert!(history["all"].is_array() && history["handlers"].is_object());

    server.shutdown().await.expect("a clean shutdown");
}

#[tokio::test]
async fn metrics_are_prometheus_text_a_parser_reads() {
    let service = Service::new();
    service.traffic(3).await;
    let server = serve(&service.admin).await;
    let answer = get(server.local_addr(), "/metrics").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some(PROMETHEUS_CONTENT_TYPE));
    let scrape = prometheus_parse::Scrape::parse(answer.body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text");
    let value = |name: &str, source: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("source") == Some(source))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} of {source} in\n{}", answer.body))
    };
    assert_eq!(value("flext_requests_processed_total", "charge_card"), 3.0);
    assert_eq!(value("flext_failed_requests_total", "charge_card"), 1.0);
    assert_eq!(value("flext_commands_processed_total", "command_bus"), 0.0);
    assert_eq!(value("flext_successful_calls_total", "payments"), 0.0);
    assert_eq!(value("flext_projection_lag", "balances"), 2.0);
    assert_eq!(value("flext_projection_up", "audit"), 1.0);
    let summary = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "flext_latency_seconds" && s.labels.get("source") == Some("create_user")
        })
        .expect("a latency summary");
    assert!(
        matches!(summary.value, prometheus_parse::Value::Summary(_)),
        "{summary:?}"
    );

    strictly_parsed(&answer.body);

    service.store_down.store(true, Ordering::SeqCst);
    let text = get(server.local_addr(), "/metrics").await.body;
    strictly_parsed(&text);
    assert!(
        text.contains("flext_projection_up{source=\"audit\"} 0"),
        "{text}"
    );
    let json = get(server.local_addr(), "/metrics?format=json").await;
    assert_eq!(json.header("content-type"), Some("application/json"));
    assert!(
        json.json()["sources"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    );
}

#[tokio::test]
async fn health_is_200_when_healthy_and_503_when_degraded_or_unhealthy() {
    let service = Service::new();
    let server = serve(&service.admin).await;
    let addr = server.local_addr();
    let health = get(addr, "/health").await;
    assert_eq!(
        (health.status, health.header("content-type")),
        (200, Some("application/json"))
    );
    let body = health.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["total_registered_handlers"].as_u64(), Some(2));
    assert_eq!(body["problems"].as_array().map(Vec::len), Some(0));

    assert_eq!(
        body["breakers"][0],
        serde_json::json!({"name": "payments", "state": "CLOSED"})
    );
    assert_eq!(body["projections"][0]["lag"].as_u64(), Some(2));

    service.breaker.transition_to_open().expect("opens");
    let degraded = get(addr, "/health").await;
    assert_eq!(degraded.status, 503);
    assert_eq!(degraded.json()["status"], "degraded");
    assert_eq!(degraded.json()["problems"][0], "breaker 'payments' is OPEN");
    // Where a dependency's outage should not take the service out of a load balancer.
    let lenient = service.admin.clone().with_degraded_ok();
    let lenient_server = serve(&lenient).await;
    let answer = get(lenient_server.local_addr(), "/health").await;
    assert_eq!(
        (answer.status, answer.json()["status"].as_str()),
        (200, Some("degraded"))
    );

    // A handler that failed and never succeeded makes it unhealthy.
    let _ = service
        .manager
        .execute("charge_card", serde_json::json!(1))
        .await;
    let unhealthy = get(addr, "/health").await;
    assert_eq!(unhealthy.status, 503);
    assert_eq!(unhealthy.json()["status"], "unhealthy");
    assert_eq!(
        unhealthy.json()["handlers"]["charge_card"]["health"],
        "unhealthy"
    );

    // So does a projection whose store cannot be reached; its error shows, without the
    // password of the connection string it names.
    service
        .manager
        .execute("charge_card", serde_json::json!(2))
        .await
        .expect("succeeds");
    service.store_down.store(true, Ordering::SeqCst);
    let down = get(addr, "/health").await;
    assert_eq!(down.status, 503);
    assert!(!down.body.contains("hunter2"), "{}", down.body);
    assert!(
        down.body.contains("postgres://app:***@db:5432/audit"),
        "{}",
        down.body
    );
    let projections = get(addr, "/projections").await;
    assert!(!projections.body.contains("hunter2"));
    assert_eq!(
        projections.json()["projections"][1]["error"]["name"],
        "UNAVAILABLE"
    );
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let service = Service::new();
    let server = serve(&service.admin).await;
    let addr = server.local_addr();

    let unknown = get(addr, "/nope").await;
    assert_eq!(
        (unknown.status, unknown.header("content-type")),
        (404, Some("application/json"))
    );
    assert_eq!(unknown.json()["error"]["name"], "NOT_FOUND");
    assert_eq!(
        unknown.json()["error"]["message"],
        "No admin endpoint at /nope"
    );

    for (method, path) in [
        ("POST", "/health"),
        ("DELETE", "/handlers"),
        ("PUT", "/"),
        ("POST", "/metrics"),
    ] {
        let answer = request(addr, method, path, None).await;
        assert_eq!(answer.status, 405, "{method} {path}");
        assert_eq!(answer.header("allow"), Some("GET, HEAD"));
        assert!(
            answer.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("read-only"))
        );
    }

    for path in [
        "/history?since=yesterday",
        "/history?since=-1",
        "/history?until=5",
        "/metrics?format=xml",
        "/metrics?fmt=json",
    ] {
        let answer = get(addr, path).await;
        assert_eq!(answer.status, 400, "{path}");
        assert_eq!(answer.json()["error"]["name"], "INVALID_ARGUMENT", "{path}");
    }
    assert_eq!(request(addr, "HEAD", "/health", None).await.status, 200);
}

#[tokio::test]
async fn a_token_guards_every_endpoint_but_the_page() {
    let service = Service::new();
    let admin = service
        .admin
        .clone()
        .with_token("s3cret-token")
        .expect("a token");
    let server = serve(&admin).await;
    let addr = server.local_addr();
    for path in [
        "/health",
        "/metrics",
        "/handlers",
        "/breakers",
        "/projections",
        "/sources",
        "/history",
        "/nope",
    ] {
        let missing = get(addr, path).await;
        assert_eq!(missing.status, 401, "{path}");
        assert_eq!(
            missing.header("www-authenticate"),
            Some("Bearer realm=\"flext-admin\"")
        );
        assert_eq!(missing.json()["error"]["name"], "AUTHORIZATION_DENIED");
        assert_eq!(
            request(addr, "GET", path, Some("wrong-token")).await.status,
            401,
            "{path}"
        );
        assert_eq!(
            request(addr, "GET", path, Some("s3cret-token!"))
                .await
                .status,
            401,
            "{path}"
        );
        // Same length, one byte off.
        assert_eq!(
            request(addr, "GET", path, Some("s3cret-tokem"))
                .await
                .status,
            401,
            "{path}"
        );
    }
    assert_eq!(
        request(addr, "GET", "/health", Some("s3cret-token"))
            .await
            .status,
        200
    );
    assert_eq!(
        request(addr, "GET", "/nope", Some("s3cret-token"))
            .await
            .status,
        404
    );
    // The page holds no data and is served without the token; its script sends it.
    assert_eq!(get(addr, "/").await.status, 200);
    assert!(!get(addr, "/").await.body.contains("s3cret-token"));

    for bad in ["", "has space", "tab\there", "é"] {
        let error = Admin::new().with_token(bad).unwrap_err();
        assert_eq!(
            error.code(),
            flext_handlers::Constants::ErrorCode::InvalidArgument,
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn the_router_mounts_under_a_prefix_in_an_app() {
    let service = Service::new();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "the service" }))
        .nest("/admin", service.admin.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    assert_eq!(get(addr, "/").await.body, "the service");
    assert_eq!(get(addr, "/admin/health").await.json()["status"], "healthy");
    assert!(get(addr, "/admin").await.body.contains("flext admin"));
    assert_eq!(get(addr, "/admin/nope").await.status, 404);
    server.abort();
}

#[tokio::test]
async fn a_taken_address_is_unavailable_and_bad_history_settings_are_refused() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let taken = holder.local_addr().expect("an address");
    let error = Admin::new()
        .serve(ServeConfig::at(taken))
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        flext_handlers::Constants::ErrorCode::Unavailable
    );
    assert!(error.message().contains(&taken.to_string()), "{error}");

    for (window, every) in [
        (Duration::from_secs(60), Duration::ZERO),
        (Duration::from_secs(1), Duration::from_secs(2)),
    ] {
        let error = Admin::new().with_history(window, every).unwrap_err();
        assert_eq!(
            error.code(),
            flext_handlers::Constants::ErrorCode::InvalidArgument
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_sampler_fills_the_history_every_interval() {
    let service = Service::new();
    let admin = service
        .admin
        .clone()
        .with_history(Duration::from_secs(5), Duration::from_secs(1))
        .expect("settings");
    let _router = admin.router();
    tokio::time::sleep(Duration::from_millis(10)).await;
    service.traffic(3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let history = admin_history(&admin).await;
    let requests: u64 = history["all"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(requests, 6);
    assert_eq!(
        history["handlers"]["charge_card"].as_array().map(Vec::len),
        Some(1)
    );
    let failures: u64 = history["handlers"]["charge_card"][0]["failures"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(failures, 1);
    // With the sampler running, requests do not sample (the intervals stay even).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let points = admin_history(&admin).await["all"]
        .as_array()
        .map_or(0, Vec::len);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        admin_history(&admin).await["all"]
            .as_array()
            .map_or(0, Vec::len),
        points
    );
    // The window keeps five intervals.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        admin_history(&admin).await["all"].as_array().map(Vec::len),
        Some(5)
    );
}

/// `GET /history?since=0` through the router in process (no socket on a paused clock).
async fn admin_history(admin: &Admin) -> serde_json::Value {
    use flext_handlers::tower::tower::ServiceExt as _;
    let request = axum::http::Request::get("/history?since=0")
        .body(axum::body::Body::empty())
        .expect("a request");
    let response = admin.router().oneshot(request).await.expect("an answer");
    assert_eq!(response.status(), 200);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    serde_json::from_slice(&body).expect("JSON")
}

/// Fails the event at position 2, applies the others.
struct Balances;

#[async_trait::async_trait]
impl flext_handlers::Protocols::Projection for Balances {
    fn name(&self) -> &str {
        "balances_runner"
    }

    async fn apply(
        &self,
        event: &flext_handlers::Types::StoredEvent,
    ) -> flext_handlers::Types::FlextResult<()> {
        if event.position == 2 {
            return Err(flext_handlers::Types::FlextError::validation(
                "a corrupt event",
            ));
        }
        Ok(())
    }

    async fn reset(&self) -> flext_handlers::Types::FlextResult<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_projection_runner_shows_its_progress_dead_letters_and_metrics() {
    use flext_handlers::CQRS::{Backoff, InMemoryEventStore, ProjectionConfig, ProjectionRunner};
    use flext_handlers::Protocols::EventStore as _;
    use flext_handlers::Types::{ExpectedVersion, JsonPayload, NewEvent};

    let store = InMemoryEventStore::new();
    for i in 0..4 {
        let event = NewEvent::new("Deposited", JsonPayload::encode(&i).expect("JSON"));
        store
            .append("account-1", ExpectedVersion::Any, vec![event])
            .await
            .expect("appended");
    }
    let runner = Arc::new(
        ProjectionRunner::new(
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            Arc::new(Balances),
        )
        .with_config(
            ProjectionConfig::default()
                .with_max_attempts(1)
                .with_backoff(Backoff::none()),
        ),
    );
    let admin = Admin::new().with_projection(runner.clone());
    let server = serve(&admin).await;
    let addr = server.local_addr();

    let before = get(addr, "/projections").await.json();
    assert_eq!(before["projections"][0]["name"], "balances_runner");
    assert_eq!(
        (
            before["projections"][0]["head"].as_u64(),
            before["projections"][0]["lag"].as_u64()
        ),
        (Some(4), Some(4))
    );
    assert_eq!(get(addr, "/health").await.json()["status"], "healthy");

    runner.catch_up().await.expect("caught up");
    let after = get(addr, "/projections").await.json();
    let view = &after["projections"][0];
    assert_eq!(
        (view["position"].as_u64(), view["lag"].as_u64()),
        (Some(4), Some(0))
    );
    assert_eq!(
        view["dead_letters"].as_u64(),
        Some(3),
        "one given up on, two parked behind it"
    );
    let health = get(addr, "/health").await;
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (503, Some("degraded"))
    );
    assert_eq!(
        health.json()["problems"][0],
        "projection 'balances_runner' has 3 dead letter(s)"
    );

    let text = get(addr, "/metrics").await.body;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text");
    let names: Vec<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "flext_projection_head",
        "flext_projection_lag",
        "flext_projection_dead_letters",
        "flext_projection_up",
        "flext_projection_events_applied_total",
    ] {
        assert_eq!(
            names.iter().filter(|n| **n == name).count(),
            1,
            "{name} once in\n{text}"
        );
    }
}

#[tokio::test]
async fn a_handler_failing_outside_the_manager_makes_the_service_unhealthy() {
    use flext_handlers::Implementation::BasicHandler;
    use flext_handlers::Management::HandlerRegistry;
    use flext_handlers::Protocols::Handler as _;

    let registry = Arc::new(HandlerRegistry::new());
    registry
        .register(
            "ship",
            BasicHandler::with_kind(
                "ship",
                flext_handlers::Constants::HandlerKind::Command,
                Ship,
            ),
        )
        .expect("registered");
    let admin = Admin::new().with_registry(registry.clone());
    let server = serve(&admin).await;
    let addr = server.local_addr();
    assert_eq!(
        get(addr, "/health").await.json()["handlers"]["ship"]["health"],
        "idle"
    );

    // Called the way a bus calls it: not through the manager.
    let ship = registry.typed::<BasicHandler<Ship>>("ship").expect("typed");
    assert!(ship.handle(1).await.is_err());
    let answer = get(addr, "/health").await;
    assert_eq!(answer.status, 503);
    let body = answer.json();
    assert_eq!(body["handlers"]["ship"]["health"], "unhealthy");
    assert_eq!(body["unhealthy_handlers"].as_u64(), Some(1));
    assert_eq!(
        body["problems"][0],
        "handler 'ship' has failed and never succeeded"
    );

    assert!(ship.handle(2).await.is_ok());
    let body = get(addr, "/health").await.json();
    assert_eq!(body["handlers"]["ship"]["health"], "healthy");
    assert_eq!(
        (body["active_handlers"].as_u64(), body["status"].as_str()),
        (Some(1), Some("healthy"))
    );
}

/// Ships even parcels only.
struct Ship;

#[async_trait::async_trait]
impl flext_handlers::Protocols::Handler for Ship {
    type Request = u64;
    type Response = u64;

    fn handler_name(&self) -> &str {
        "ship"
    }

    async fn handle(&self, parcel: u64) -> flext_handlers::Types::FlextResult<u64> {
        if parcel.is_multiple_of(2) {
            Ok(parcel)
        } else {
            Err(flext_handlers::Types::FlextError::operation("carrier down"))
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_that_does_not_answer_is_a_timeout_not_a_hung_endpoint() {
    use flext_handlers::tower::tower::ServiceExt as _;

    let admin = Admin::new()
        .with_projection(Arc::new(flext_admin::projection_probe("stuck", || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(flext_admin::ProjectionView::new("stuck", 0, 0))
        })))
        .with_projection(Arc::new(flext_admin::projection_probe("fine", || async {
            Ok(flext_admin::ProjectionView::new("fine", 3, 3))
        })))
        .with_probe_timeout(Duration::from_millis(250))
        .expect("a timeout");
    let started = tokio::time::Instant::now();
    let request = axum::http::Request::get("/health")
        .body(axum::body::Body::empty())
        .expect("a request");
    let response = admin.router().oneshot(request).await.expect("an answer");
    assert_eq!(response.status(), 503);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(250),
        "both asked at once, each bounded"
    );
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["projections"][0]["error"]["name"], "TIMEOUT");
    assert_eq!(body["projections"][1]["lag"].as_u64(), Some(0));
    assert!(
        body["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("did not report its progress within 250ms")),
        "{body}"
    );
    assert_eq!(
        Admin::new()
            .with_probe_timeout(Duration::ZERO)
            .unwrap_err()
            .code(),
        flext_handlers::Constants::ErrorCode::InvalidArgument
    );
}

/// Reads `text` with `prometheus_client`'s strict parser (where it is installed; see
/// `flext_testing::prometheus`): every sample line must be read.
fn strictly_parsed(text: &str) {
    let Some(results) = flext_testing::prometheus::parsed(&[text.to_owned()]) else {
        return;
    };
    let samples: usize = results[0]["families"]
        .as_array()
        .expect("families")
        .iter()
        .map(|family| family["samples"].as_array().map_or(0, Vec::len))
        .sum();
    let lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(samples, lines, "every sample line is read");
}

#[tokio::test]
async fn a_dropped_server_stops_listening() {
    let server = serve(&Admin::new()).await;
    let addr = server.local_addr();
    assert_eq!(get(addr, "/health").await.status, 200);
    drop(server);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still listening after the drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn without_a_token_only_requests_addressed_to_this_machine_are_answered() {
    use flext_handlers::tower::tower::ServiceExt as _;

    let status = |admin: &Admin, host: &str| {
        let request = axum::http::Request::get("/health")
            .header("host", host)
            .body(axum::body::Body::empty())
            .expect("a request");
        let router = admin.router();
        async move {
            router
                .oneshot(request)
                .await
                .expect("an answer")
                .status()
                .as_u16()
        }
    };
    let open = Admin::new();
    for host in [
        "127.0.0.1:9180",
        "localhost",
        "LOCALHOST:80",
        "[::1]:9180",
        "10.0.0.7",
    ] {
        assert_eq!(status(&open, host).await, 200, "{host}");
    }
    // A page elsewhere rebinding its name to this machine sends its own name.
    for host in [
        "evil.example",
        "evil.example:9180",
        "localhost.evil.example",
        "[zz]:1",
    ] {
        assert_eq!(status(&open, host).await, 403, "{host}");
    }
    let named = Admin::new()
        .with_allowed_hosts(["admin.internal"])
        .expect("a host");
    assert_eq!(status(&named, "Admin.Internal:9180").await, 200);
    assert_eq!(status(&named, "evil.example").await, 403);
    // With a token the name does not matter: the page elsewhere has no token.
    let guarded = Admin::new().with_token("t").expect("a token");
    let request = axum::http::Request::get("/health")
        .header("host", "admin.example.com")
        .header("authorization", "Bearer t")
        .body(axum::body::Body::empty())
        .expect("a request");
    assert_eq!(
        guarded
            .router()
            .oneshot(request)
            .await
            .expect("an answer")
            .status(),
        200
    );
    for bad in ["", "a b", "h:80", "h/x"] {
        assert_eq!(
            Admin::new().with_allowed_hosts([bad]).unwrap_err().code(),
            flext_handlers::Constants::ErrorCode::InvalidArgument,
            "{bad:?}"
        );
    }
}
