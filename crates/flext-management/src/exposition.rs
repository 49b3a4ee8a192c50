//! Metrics exposition: JSON, and the Prometheus text format.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use flext_protocols::MetricsSource;
use flext_types::{LatencySummary, MetricSet, MetricValue};
use serde_json::Value;

/// The metric sets of `sources`, for [`to_json`] and [`to_prometheus`].
pub fn collect(sources: &[&dyn MetricsSource]) -> Vec<MetricSet> {
    sources.iter().map(|source| source.metric_set()).collect()
}

/// The metric sets as one JSON document: `{"sources": [{"source": …, "samples": […]}]}`.
pub fn to_json(sets: &[MetricSet]) -> Value {
    serde_json::json!({ "sources": sets })
}

/// The metric sets in the Prometheus text exposition format (version 0.0.4).
///
/// Every sample becomes `flext_{name}` with a `source` label plus its own labels; names and
/// label names are reduced to `[a-zA-Z0-9_]` (a label name never starts with a digit or
/// `__`, which Prometheus reserves); label values and help texts are escaped. Counters end
/// in `_total`; latency summaries are `flext_{name}_seconds` with the 0.5, 0.95 and 0.99
/// quantiles, `_sum` and `_count`. Samples of one metric from many sources are grouped
/// under one `# HELP` and one `# TYPE` line.
///
/// The output parses whatever names and labels the sets hold:
/// - A sample label whose name is taken — `source` and `quantile` (set here), `le`
///   (Prometheus's bucket label), or an earlier label of the sample once reduced (`a-b`
///   and `a.b` are both `a_b`) — is renamed `exported_{name}`, as Prometheus renames
///   scraped labels that clash with its own; `exported_` is put in front again until the
///   name is free.
/// - A sample whose metric name, once reduced, is a family of another kind goes to a
///   family of its own, named with the kind (`flext_x_total_gauge` beside the counter
///   `flext_x_total`).
///
/// ```
/// use flext_types::{LatencySummary, MetricSet, MetricValue};
///
/// let mut set = MetricSet::new("user_service");
/// set.push("requests_processed", "Finished calls.", MetricValue::Counter(4));
/// let text = flext_management::to_prometheus(&[set]);
/// assert!(text.contains("# TYPE flext_requests_processed_total counter\n"));
/// assert!(text.contains("flext_requests_processed_total{source=\"user_service\"} 4\n"));
///
/// let mut set = MetricSet::new("event_bus");
/// let labels = vec![("source".to_owned(), "billing".to_owned())];
/// set.push_labelled("handled", "Handled.", labels, MetricValue::Counter(1));
/// let text = flext_management::to_prometheus(&[set]);
/// assert!(text.contains("flext_handled_total{source=\"event_bus\",exported_source=\"billing\"} 1\n"));
/// ```
pub fn to_prometheus(sets: &[MetricSet]) -> String {
    struct Family {
        help: String,
        kind: Kind,
        lines: Vec<String>,
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for series in series(sets) {
        let name = series.family;
        let labels = series.labels;
        let family = families.entry(name.clone()).or_insert_with(|| Family {
            help: series.help.to_owned(),
            kind: series.kind,
            lines: Vec::new(),
        });
        match series.value {
            MetricValue::Counter(n) => family
                .lines
                .push(format!("{name}{} {n}", render(&labels, None))),
            MetricValue::Gauge(v) => {
                family
                    .lines
                    .push(format!("{name}{} {}", render(&labels, None), number(*v)))
            }
            MetricValue::Latency(summary) => {
                for (q, value) in quantiles(summary) {
                    family.lines.push(format!(
                        "{name}{} {}",
                        render(&labels, Some(q)),
                        number(value)
                    ));
                }
                family.lines.push(format!(
                    "{name}_sum{} {}",
                    render(&labels, None),
                    number(seconds_sum(summary))
                ));
                family.lines.push(format!(
                    "{name}_count{} {}",
                    render(&labels, None),
                    summary.count
                ));
            }
        }
    }
    let mut out = String::new();
    for (name, family) in families {
        let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
        for line in family.lines {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// The kind of a family of series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Summary => "summary",
        }
    }
}

/// One sample as it is exposed: the name and kind of its family, its help, its labels
/// (`source` first) and its value.
pub(crate) struct Series<'a> {
    pub(crate) family: String,
    pub(crate) kind: Kind,
    pub(crate) help: &'a str,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: &'a MetricValue,
}

/// Every sample of `sets` with the family name and labels [`to_prometheus`] gives it:
/// the one naming that the text exposition and the `metrics` bridge share.
pub(crate) fn series(sets: &[MetricSet]) -> Vec<Series<'_>> {
    let mut kinds: HashMap<String, Kind> = HashMap::new();
    let mut out = Vec::new();
    for set in sets {
        for sample in &set.samples {
            let mut base = format!("flext_{}", sanitize(&sample.name));
            let (family, kind) = loop {
                let (name, kind) = match &sample.value {
                    MetricValue::Counter(_) if base.ends_with("_total") => {
                        (base.clone(), Kind::Counter)
                    }
                    MetricValue::Counter(_) => (format!("{base}_total"), Kind::Counter),
                    MetricValue::Gauge(_) => (base.clone(), Kind::Gauge),
                    MetricValue::Latency(_) => (format!("{base}_seconds"), Kind::Summary),
                };
                match kinds.get(&name) {
                    Some(taken) if *taken != kind => base = format!("{name}_{}", kind.as_str()),
                    _ => break (name, kind),
                }
            };
            kinds.entry(family.clone()).or_insert(kind);
            out.push(Series {
                family,
                kind,
                help: &sample.help,
                labels: labels(&set.source, &sample.labels),
                value: &sample.value,
            });
        }
    }
    out
}

/// A summary's quantiles, in seconds, with their `quantile` label values.
pub(crate) fn quantiles(summary: &LatencySummary) -> [(&'static str, f64); 3] {
    [
        ("0.5", summary.p50.as_secs_f64()),
        ("0.95", summary.p95.as_secs_f64()),
        ("0.99", summary.p99.as_secs_f64()),
    ]
}

/// A summary's total time, in seconds (its mean times its count).
pub(crate) fn seconds_sum(summary: &LatencySummary) -> f64 {
    summary.mean.as_secs_f64() * summary.count as f64
}

/// Label names the exposition sets itself (`source` on every series, `quantile` on the
/// quantiles of a summary) or Prometheus keeps for its own (`le`, a histogram's bucket).
const TAKEN_LABELS: [&str; 3] = ["source", "quantile", "le"];

/// The labels of one series: `source`, then the sample's own, each name reduced and made
/// unique with `exported_` in front (see [`to_prometheus`]).
fn labels(source: &str, own: &[(String, String)]) -> Vec<(String, String)> {
    let mut taken: HashSet<String> = TAKEN_LABELS.iter().map(|&name| name.to_owned()).collect();
    let mut labels = Vec::with_capacity(own.len() + 1);
    labels.push(("source".to_owned(), source.to_owned()));
    for (name, value) in own {
        let mut name = sanitize(name);
        if name.starts_with("__") {
            name = format!("_{}", name.trim_start_matches('_'));
        }
        while taken.contains(&name) {
            name.insert_str(0, "exported_");
        }
        taken.insert(name.clone());
        labels.push((name, value.clone()));
    }
    labels
}

/// A metric or label name reduced to `[a-zA-Z0-9_]`, not starting with a digit.
fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn render(labels: &[(String, String)], quantile: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(q) = quantile {
        parts.push(format!("quantile=\"{q}\""));
    }
    format!("{{{}}}", parts.join(","))
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 {
            "+Inf".to_owned()
        } else {
            "-Inf".to_owned()
        }
    } else {
        format!("{value}")
    }
}
