//! Exposition: the Prometheus text output parses, and JSON carries every source.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use flext_management::{HandlerManager, HandlerSpec, to_json, to_prometheus};
use flext_types::{LatencySummary, MetricSet, MetricValue};
use serde_json::json;

/// Checks one exposition against the text format: `# HELP` and `# TYPE` once per family,
/// before its samples; valid names; well-formed, escaped labels; numeric values. Returns the
/// samples as (name, labels, value).
fn parse(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut typed: HashSet<String> = HashSet::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(
                valid_name(name) && helped.insert(name.to_owned()),
                "HELP once per family: {line}"
            );
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap().to_owned();
            let kind = parts.next().unwrap();
            assert!(
                ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                helped.contains(&name) && typed.insert(name.clone()),
                "TYPE once, after HELP: {line}"
            );
            current = Some(name);
        } else {
            let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("numeric value in {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels close with }");
                    let mut labels = BTreeMap::new();
                    let mut rest = body;
                    while !rest.is_empty() {
                        let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
                        assert!(valid_name(key), "label name {key}");
                        let mut value = String::new();
                        let mut chars = after.char_indices();
                        let end = loop {
                            let (i, c) = chars.next().expect("closed label value");
                            match c {
                                '\\' => value.push(match chars.next().unwrap().1 {
                                    'n' => '\n',
                                    other => other,
                                }),
                                '"' => break i,
                                other => value.push(other),
                            }
                        };
                        labels.insert(key.to_owned(), value);
                        rest = after[end + 1..]
                            .strip_prefix(',')
                            .unwrap_or(&after[end + 1..]);
                    }
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            let family = current.as_deref().expect("a sample follows its TYPE");
            assert!(
                name == family
                    || name == format!("{family}_sum")
                    || name == format!("{family}_count"),
                "{name} outside its family {family}"
            );
            samples.push((name, labels, value));
        }
    }
    samples
}

#[tokio::test]
async fn handler_and_registry_metrics_render_as_valid_prometheus_text() {
    let manager = HandlerManager::new();
    manager
        .register_ecosystem(vec![
            HandlerSpec::basic("alpha"),
            HandlerSpec::basic("beta"),
        ])
        .unwrap();
    for _ in 0..3 {
        manager.execute("alpha", json!(1)).await.unwrap();
    }
    manager.execute("beta", json!(1)).await.unwrap();
    let text = to_prometheus(&manager.metric_sets());
    let samples = parse(&text);
    let find = |name: &str, source: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.get("source").map(String::as_str) == Some(source))
            .map(|s| s.2)
    };
    assert_eq!(find("flext_requests_processed_total", "alpha"), Some(3.0));
    assert_eq!(find("flext_requests_processed_total", "beta"), Some(1.0));
    assert_eq!(find("flext_latency_seconds_count", "alpha"), Some(3.0));
    assert_eq!(find("flext_lookups_total", "handler_registry"), Some(4.0));
    assert_eq!(
        text.matches("# TYPE flext_requests_processed_total counter")
            .count(),
        1,
        "one family for both handlers"
    );
    assert!(samples.iter().any(|(n, l, _)| n == "flext_latency_seconds"
        && l.get("quantile").map(String::as_str) == Some("0.99")));
}

#[test]
fn names_and_label_values_are_sanitized_and_escaped() {
    let mut set = MetricSet::new("odd \"source\"\nname");
    set.push_labelled(
        "events received!",
        "Help with \\ and\nnewline.",
        vec![("event-name".into(), "User\"Created\\".into())],
        MetricValue::Counter(2),
    );
    set.push("9lives", "Starts with a digit.", MetricValue::Gauge(0.5));
    set.push(
        "latency",
        "Latency.",
        MetricValue::Latency(LatencySummary {
            count: 2,
            mean: Duration::from_millis(5),
            p50: Duration::from_millis(4),
            ..LatencySummary::default()
        }),
    );
    let text = to_prometheus(&[set.clone()]);
    let samples = parse(&text);
    let counter = samples
        .iter()
        .find(|s| s.0 == "flext_events_received__total")
        .expect("sanitized counter");
    assert_eq!(counter.1["event_name"], "User\"Created\\");
    assert_eq!(counter.1["source"], "odd \"source\"\nname");
    assert!(samples.iter().any(|s| s.0 == "flext__9lives" && s.2 == 0.5));
    let sum = samples
        .iter()
        .find(|s| s.0 == "flext_latency_seconds_sum")
        .unwrap();
    assert!((sum.2 - 0.010).abs() < 1e-12);
    let json = to_json(&[set]);
    assert_eq!(json["sources"][0]["samples"][0]["value"]["kind"], "counter");
}

#[tokio::test]
async fn buses_chains_pipelines_and_breakers_render_together() {
    use flext_cqrs::{CommandBus, EventBus, QueryBus};
    use flext_management::collect;
    use flext_patterns::{CircuitBreaker, CircuitBreakerConfig, HandlerChain, Pipeline};
    use flext_protocols::{Command, MetricsSource};

    struct Ping;
    impl Command for Ping {
        type Output = u8;
    }
    let mut commands = CommandBus::new();
    commands.register_fn(|_: Ping| async { Ok(1u8) }).unwrap();
    commands.send(Ping).await.unwrap();
    let queries = QueryBus::new();
    let events = EventBus::new();
    let mut chain = HandlerChain::new("api_chain");
    chain.add_fn("pass", |x: u8| async move { Ok(x) }).unwrap();
    chain.handle(1).await.unwrap();
    let pipeline = Pipeline::<u8>::new("etl").add_stage(|x: u8| Ok(x)).unwrap();
    pipeline.process(1).await.unwrap();
    let breaker = CircuitBreaker::new("payments", CircuitBreakerConfig::default()).unwrap();
    breaker
        .call(async { Ok::<_, flext_types::FlextError>(()) })
        .await
        .unwrap();

    let sources: [&dyn MetricsSource; 6] =
        [&commands, &queries, &events, &chain, &pipeline, &breaker];
    let sets = collect(&sources);
    let samples = parse(&to_prometheus(&sets));
    let has = |name: &str, source: &str| {
        samples
            .iter()
            .any(|(n, l, _)| n == name && l.get("source").map(String::as_str) == Some(source))
    };
    assert!(has("flext_commands_processed_total", "command_bus"));
    assert!(
        has("flext_processed_total", "command_bus"),
        "per command type, labelled"
    );
    assert!(has("flext_total_requests_total", "api_chain"));
    assert!(has("flext_executions_total", "etl"));
    assert!(has("flext_successful_calls_total", "payments"));
    assert!(samples.iter().any(|(n, l, v)| n == "flext_state"
        && l.get("state").map(String::as_str) == Some("CLOSED")
        && *v == 1.0));
    let json = to_json(&sets);
    assert_eq!(json["sources"].as_array().unwrap().len(), 6);
}
