//! The Prometheus text, with hostile names, labels and values, read by a real parser
//! (`prometheus_client`'s, in Python) and checked by a proptest for unique, valid label
//! names.
//!
//! Without `prometheus_client` the parser tests say they were skipped, unless `CI` is set:
//! then they fail (`.ci/run` installs it).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use flext_management::to_prometheus;
use flext_testing::prometheus::parsed;
use flext_types::{LatencySummary, MetricSet, MetricValue};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::Value;

/// Names and values a user might give: reserved label names, names that reduce alike,
/// empty, unicode, quotes, backslashes, newlines.
const HOSTILE: &[&str] = &[
    "source",
    "quantile",
    "le",
    "exported_source",
    "__name__",
    "__",
    "_",
    "",
    "a-b",
    "a.b",
    "a b",
    "9lives",
    "ünïcödé",
    "say \"hi\"",
    "back\\slash",
    "new\nline",
    "{}=,",
];

fn hostile_sets() -> Vec<MetricSet> {
    let summary = LatencySummary {
        count: 3,
        mean: Duration::from_millis(2),
        p50: Duration::from_millis(1),
        p95: Duration::from_millis(3),
        p99: Duration::from_millis(4),
        ..LatencySummary::default()
    };
    let labels: Vec<(String, String)> = HOSTILE
        .iter()
        .map(|&name| (name.to_owned(), format!("{name} value")))
        .collect();
    let mut set = MetricSet::new("odd \"source\"\\\nname");
    for (i, &name) in HOSTILE.iter().enumerate() {
        let help = "help with \\ and\nnewline";
        set.push_labelled(name, help, labels.clone(), MetricValue::Counter(i as u64));
        set.push_labelled(name, help, labels.clone(), MetricValue::Gauge(f64::NAN));
        set.push_labelled(name, help, labels.clone(), MetricValue::Latency(summary));
    }
    for value in [
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        1e300,
        f64::MIN_POSITIVE,
    ] {
        set.push_labelled(
            "extreme",
            "Extremes.",
            vec![("value".to_owned(), value.to_string())],
            MetricValue::Gauge(value),
        );
    }
    // A gauge whose name is a counter family's.
    set.push("clash", "A counter.", MetricValue::Counter(1));
    set.push("clash_total", "A gauge.", MetricValue::Gauge(1.0));
    // A counter already ending in `_total` keeps one.
    set.push("done_total", "A counter.", MetricValue::Counter(2));
    vec![set, MetricSet::new("empty")]
}

#[test]
fn hostile_names_labels_and_values_parse_with_prometheus_client() {
    let text = to_prometheus(&hostile_sets());
    let Some(results) = parsed(std::slice::from_ref(&text)) else {
        return;
    };
    let families = results[0]["families"].as_array().unwrap();
    let samples: Vec<&Value> = families
        .iter()
        .flat_map(|family| family["samples"].as_array().unwrap())
        .collect();
    // A user's `source`, `quantile` and `le` keep their values under `exported_` names,
    // beside the exposition's own `source` and `quantile`.
    let quantile = samples
        .iter()
        .find(|sample| sample["labels"]["quantile"] == "0.99")
        .expect("a summary's quantile");
    let labels = &quantile["labels"];
    assert_eq!(labels["source"], "odd \"source\"\\\nname");
    assert_eq!(labels["exported_source"], "source value");
    assert_eq!(labels["exported_exported_source"], "exported_source value");
    assert_eq!(labels["exported_quantile"], "quantile value");
    assert_eq!(labels["exported_le"], "le value");
    assert_eq!(labels["a_b"], "a-b value");
    assert_eq!(labels["exported_a_b"], "a.b value");
    assert_eq!(labels["_name__"], "__name__ value");
    assert_eq!(labels["_9lives"], "9lives value");
    assert_eq!(labels["say__hi_"], "say \"hi\" value");
    assert_eq!(labels["back_slash"], "back\\slash value");
    assert_eq!(labels["new_line"], "new\nline value");
    assert_eq!(labels.as_object().unwrap().len(), HOSTILE.len() + 2);
    // Every value arrives, NaN and infinities included.
    let values: HashSet<String> = samples
        .iter()
        .map(|sample| sample["value"].to_string())
        .collect();
    for value in ["\"nan\"", "\"inf\"", "\"-inf\"", "1e+300"] {
        assert!(values.contains(value), "{value} in {values:?}");
    }
    for (label, value) in [("inf", "\"inf\""), ("-inf", "\"-inf\"")] {
        let sample = samples
            .iter()
            .find(|sample| sample["labels"]["value"] == label)
            .unwrap();
        assert_eq!(sample["value"].to_string(), value);
    }
    // A gauge named like a counter family is a family of its own.
    let kinds: BTreeMap<&str, &str> = families
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds.get("flext_clash_total_gauge"),
        Some(&"gauge"),
        "{kinds:?}"
    );
    assert!(text.contains("\nflext_done_total{"), "{text}");
}

/// Label maps of any names and values, the reserved ones made likely.
fn label_maps() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        prop::sample::select(HOSTILE).prop_map(str::to_owned),
        any::<String>(),
        "[a-z_.:-]{0,6}",
    ];
    prop::collection::vec((name, any::<String>()), 0..8)
}

/// One source's counter, gauge and summary, each labelled `labels`.
fn exposition(labels: &[(String, String)], name: &str) -> String {
    let mut set = MetricSet::new("source");
    set.push_labelled(
        name.to_owned(),
        "Help.",
        labels.to_vec(),
        MetricValue::Counter(1),
    );
    set.push_labelled(
        name.to_owned(),
        "Help.",
        labels.to_vec(),
        MetricValue::Gauge(0.5),
    );
    let summary = MetricValue::Latency(LatencySummary::default());
    set.push_labelled(name.to_owned(), "Help.", labels.to_vec(), summary);
    to_prometheus(&[set])
}

/// The label names of every sample line of `text`, unescaping values as it goes.
fn label_names(text: &str) -> Vec<Vec<String>> {
    let mut series = Vec::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((_, mut rest)) = line.split_once('{') else {
            series.push(Vec::new());
            continue;
        };
        let mut names = Vec::new();
        while let Some((name, after)) = rest.split_once("=\"") {
            names.push(name.to_owned());
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().expect("a closed label value") {
                    (_, '\\') => {
                        chars.next();
                    }
                    (i, '"') => break i,
                    _ => {}
                }
            };
            rest = after[end + 1..].trim_start_matches(',');
            if rest.starts_with('}') {
                break;
            }
        }
        series.push(names);
    }
    series
}

proptest! {
    #[test]
    fn every_series_has_unique_valid_label_names(labels in label_maps(), name in any::<String>()) {
        let text = exposition(&labels, &name);
        let series = label_names(&text);
        prop_assert_eq!(series.len(), 7, "{}", text);
        for names in series {
            let unique: HashSet<&String> = names.iter().collect();
            prop_assert_eq!(unique.len(), names.len(), "{:?}", names);
            for name in &names {
                let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with("__");
                prop_assert!(valid, "label name {:?}", name);
            }
        }
    }
}

#[test]
fn random_label_maps_parse_with_prometheus_client() {
    let mut runner = TestRunner::deterministic();
    let cases = (label_maps(), any::<String>());
    let texts: Vec<String> = (0..300)
        .map(|_| {
            let (labels, name) = cases.new_tree(&mut runner).unwrap().current();
            exposition(&labels, &name)
        })
        .collect();
    let Some(results) = parsed(&texts) else {
        return;
    };
    for result in results {
        let samples: usize = result["families"]
            .as_array()
            .unwrap()
            .iter()
            .map(|family| family["samples"].as_array().unwrap().len())
            .sum();
        assert_eq!(samples, 7, "{result}");
    }
}
