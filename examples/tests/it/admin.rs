//! `examples/admin.rs`: the service under traffic serves its dashboard and endpoints, and
//! the numbers it shows move.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The example's process, killed if the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("the example listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("a request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    let status = answer[9..12].parse().expect("a status");
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn the_admin_example_serves_a_live_dashboard_of_its_traffic() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let child = Command::new(cargo)
        .args(["run", "--quiet", "--example", "admin", "--"])
        .args([
            "--port",
            "0",
            "--seconds",
            "8",
            "--rate",
            "100",
            "--outage-cycle",
            "3",
            "--token",
            "t0k+n",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cargo runs the example");
    let mut running = Running(child);
    let stdout = running.0.stdout.take().expect("its output");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let first = received
        .recv_timeout(Duration::from_secs(300))
        .expect("the example prints its address");
    let url = first
        .strip_prefix("Admin dashboard: http://")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"));
    let (addr, fragment) = url.split_once('/').expect("an address and a path");
    assert_eq!(fragment, "#token=t0k%2Bn");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    assert_eq!(
        get(addr, "/health", None).0,
        401,
        "the token guards the endpoints"
    );
    let (status, page) = get(addr, "/", None);
    assert_eq!(status, 200);
    assert!(page.contains("flext admin"));

    std::thread::sleep(Duration::from_millis(1500));
    let total = |addr: &str| -> u64 {
        let handlers = json(&get(addr, "/handlers", Some("t0k+n")).1);
        handlers["handlers"]
            .as_array()
            .expect("handlers")
            .iter()
            .find(|h| h["name"] == "place_order")
            .and_then(|h| h["requests_processed"].as_u64())
            .expect("place_order is listed")
    };
    let before = total(addr);
    assert!(before > 0, "no traffic yet");

    // The gateway goes down in the last second of every three: the breaker opens.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut transitions = 0;
    while Instant::now() < deadline && transitions == 0 {
        std::thread::sleep(Duration::from_millis(250));
        let breakers = json(&get(addr, "/breakers", Some("t0k+n")).1);
        assert_eq!(breakers["breakers"][0]["name"], "payments");
        transitions = breakers["breakers"][0]["transitions"].as_u64().unwrap_or(0);
    }
    assert!(transitions > 0, "the breaker never changed state");
    assert!(total(addr) > before, "the numbers did not move");

    let projections = json(&get(addr, "/projections", Some("t0k+n")).1);
    assert_eq!(projections["projections"][0]["name"], "revenue");
    assert!(projections["projections"][0]["head"].as_u64().unwrap_or(0) > 0);
    let (status, metrics) = get(addr, "/metrics", Some("t0k+n"));
    assert_eq!(status, 200);
    assert!(metrics.contains("flext_requests_processed_total{source=\"place_order\"}"));
    assert!(metrics.contains("flext_commands_processed_total{source=\"command_bus\"}"));
    // The bus's traffic counts in the health report, not only calls through the manager.
    let health = json(&get(addr, "/health", Some("t0k+n")).1);
    assert_eq!(
        health["handlers"]["place_order"]["health"], "healthy",
        "{health}"
    );

    let mut rest = Vec::new();
    while let Ok(line) = received.recv_timeout(Duration::from_secs(30)) {
        rest.push(line);
    }
    let status = running.0.wait().expect("the example ends");
    assert!(status.success(), "the example failed: {rest:?}");
    let rest = rest.join("\n");
    assert!(rest.contains("Orders placed: "), "{rest}");
    assert!(rest.contains("Projection 'revenue': position "), "{rest}");
}
