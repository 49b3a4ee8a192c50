//! The Prometheus text exposition read by a real, strict parser: `prometheus_client`'s (in
//! Python), which refuses a line it cannot read, where Rust parsers skip it. Tests of every
//! crate that writes the format use it.
//!
//! Without `prometheus_client` the reading is skipped, saying so, unless `CI` is set: then
//! it fails (`.ci/run` installs it).

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Reads a JSON list of expositions on stdin and prints, for each, its families as
/// `prometheus_client` parses them, or the parser's error.
const PARSE: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for text in json.load(sys.stdin):
    try:
        out.append({"families": [
            {"name": f.name, "type": f.type, "samples": [
                {"name": s.name, "labels": s.labels,
                 "value": s.value if math.isfinite(s.value) else repr(s.value)}
                for s in f.samples]}
            for f in text_string_to_metric_families(text)]})
    except Exception as e:
        out.append({"error": repr(e)})
print(json.dumps(out))
"#;

/// Each exposition as `prometheus_client` reads it — `{"families": [{"name", "type",
/// "samples": [{"name", "labels", "value"}]}]}` — or `None` (after saying so) when the
/// parser is not installed and `CI` is not set. Panics, naming the exposition, when the
/// parser refuses one: this is for tests.
pub fn parsed(texts: &[String]) -> Option<Vec<Value>> {
    let installed = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus_client is not installed (python3 -m pip install prometheus_client)"
        );
        eprintln!("skipped: prometheus_client not installed");
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let input = serde_json::to_vec(texts).expect("texts are JSON");
    child
        .stdin
        .take()
        .expect("its input")
        .write_all(&input)
        .expect("the texts are written");
    let output = child.wait_with_output().expect("the parser ends");
    assert!(output.status.success(), "the parser script failed");
    let results: Vec<Value> =
        serde_json::from_slice(&output.stdout).expect("the parser answers JSON");
    for (text, result) in texts.iter().zip(&results) {
        assert!(
            result.get("error").is_none(),
            "prometheus_client rejects the exposition: {}\n{text}",
            result["error"]
        );
    }
    Some(results)
}
