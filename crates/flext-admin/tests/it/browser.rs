//! The dashboard in a real browser: headless Chromium loads the page of a running service,
//! runs its scripts, and the DOM it leaves shows handlers, breakers and charts with data,
//! with numbers that move after more traffic.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flext_admin::ServeConfig;
use tokio::process::Command;

use crate::service::Service;

/// Debian's package installs `chromium`; other systems name it differently.
const BROWSERS: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

fn browser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    BROWSERS.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Runs headless Chromium on `url` with `args` (after the common ones), letting the page's
/// timers run for `budget` of virtual time; returns what it printed.
async fn chromium(
    browser: &Path,
    profile: &Path,
    url: &str,
    args: &[&str],
    budget: Duration,
) -> String {
    let mut command = Command::new(browser);
    command
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--window-size=1400,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("Chromium finishes within 90 s")
        .expect("Chromium runs");
    assert!(
        output.status.success(),
        "Chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The value of `attribute` on the element that carries `marker` (an attribute with its
/// value, as the DOM dump prints it).
fn attribute_of<'a>(dom: &'a str, marker: &str, attribute: &str) -> Option<&'a str> {
    let at = dom.find(marker)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    let tag = &dom[start..end];
    let key = format!(" {attribute}=\"");
    let from = tag.find(&key)? + key.len();
    let len = tag[from..].find('"')?;
    Some(&tag[from..from + len])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_handlers_breakers_and_charts_in_chromium() {
    let Some(browser) = browser() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium is not installed; CI installs the `chromium` package"
        );
        eprintln!("skipped: Chromium is not installed (apt-get install chromium)");
        return;
    };
    let service = Arc::new(Service::new());
    // A token as `openssl rand -base64` makes them: '+' and '/' in it.
    let token = "k+9/Zq==";
    let admin = service
        .admin
        .clone()
        .with_history(Duration::from_secs(60), Duration::from_millis(200))
        .and_then(|admin| admin.with_token(token))
        .expect("settings");
    let server = admin.serve(ServeConfig::local(0)).await.expect("serving");
    service.breaker.transition_to_open().expect("opens");

    // Traffic in the background while the browser looks.
    let running = Arc::new(AtomicBool::new(true));
    let traffic = {
        let (service, running) = (service.clone(), running.clone());
        tokio::spawn(async move {
            while running.load(Ordering::SeqCst) {
                service.traffic(5).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;

    let profile = tempdir();
    let url = format!("{}#token=k%2B9%2FZq%3D%3D", server.url());
    let first = chromium(
        &browser,
        &profile,
        &url,
        &["--dump-dom"],
        Duration::from_secs(3),
    )
    .await;
    assert!(
        first.contains("data-handler=\"create_user\""),
        "no handler rows in\n{first}"
    );
    assert!(first.contains("data-handler=\"charge_card\""));
    assert_eq!(
        attribute_of(&first, "data-breaker=\"payments\"", "data-state"),
        Some("OPEN")
    );
    assert!(first.contains("data-projection=\"balances\""));
    let points: u32 = attribute_of(&first, "id=\"latency-chart\"", "data-points")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        points > 0,
        "the latency chart has no data points in\n{first}"
    );
    assert!(first.contains("<polyline"), "no chart lines");
    // The page refreshed itself while it was open, and the numbers moved between its
    // first refresh and its last.
    let refreshes: u32 = attribute_of(&first, "<body", "data-refreshes")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        refreshes >= 2,
        "the page did not refresh itself: {refreshes} refresh(es)"
    );
    let number = |dom: &str, attribute: &str| -> u64 {
        attribute_of(dom, "data-handler=\"create_user\"", attribute)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {attribute} in\n{dom}"))
    };
    let total = |dom: &str| number(dom, "data-total");
    assert!(
        total(&first) > number(&first, "data-first-total"),
        "the numbers did not move while the page was open"
    );
    let before = total(&first);
    assert!(before > 0);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = chromium(
        &browser,
        &profile,
        &url,
        &["--dump-dom"],
        Duration::from_secs(2),
    )
    .await;
    assert!(
        total(&second) > before,
        "the numbers did not move: {before} then {}",
        total(&second)
    );

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("admin-dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let shot = format!("--screenshot={}", screenshot.display());
    chromium(&browser, &profile, &url, &[&shot], Duration::from_secs(3)).await;
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");

    running.store(false, Ordering::SeqCst);
    traffic.await.expect("traffic ends");
    server.shutdown().await.expect("a clean shutdown");
    let _ = std::fs::remove_dir_all(&profile);
}

fn tempdir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "chromium-profile-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("a profile directory");
    dir
}
