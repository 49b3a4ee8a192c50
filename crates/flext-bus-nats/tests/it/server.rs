//! A private `nats-server -js` for one test: a free port, a data directory of its own,
//! killed (and its directory removed) when dropped, also when the test fails.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flext_bus_nats::async_nats;

/// Whether the NATS tests run: `FLEXT_TEST_NATS_URL` is set (CI sets it; the tests start
/// servers of their own and use the variable only as the switch) and `nats-server` is
/// installed. Prints why a test is skipped.
pub(crate) fn enabled(test: &str) -> bool {
    if std::env::var_os("FLEXT_TEST_NATS_URL").is_none() {
        println!("skipped {test}: FLEXT_TEST_NATS_URL is not set");
        return false;
    }
    if binary().is_none() {
        println!("skipped {test}: nats-server is not installed");
        return false;
    }
    true
}

fn binary() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

/// A running private server.
pub(crate) struct NatsServer {
    child: Option<Child>,
    pub(crate) port: u16,
    dir: PathBuf,
    /// A configuration file, when the server needs settings beyond the flags.
    config: Option<PathBuf>,
}

impl NatsServer {
    /// Starts a server on a free port with a new data directory.
    pub(crate) fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a server with `settings` (nats-server configuration lines) added.
    pub(crate) fn start_with(settings: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir = std::env::temp_dir().join(format!("flext-nats-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the data directory");
        let config = (!settings.is_empty()).then(|| {
            let path = dir.join("server.conf");
            std::fs::write(&path, settings).expect("the configuration file");
            path
        });
        let mut server = Self {
            child: None,
            port,
            dir,
            config,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut command = Command::new(binary().expect("nats-server"));
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nats-server did not listen on {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's URL.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _killed = child.kill();
            let _reaped = child.wait();
        }
    }

    /// Starts it again on the same port and data directory.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A client that keeps reconnecting (every 100 ms) through outages.
    pub(crate) async fn client(&self) -> async_nats::Client {
        connect(&self.url()).await
    }
}

/// A client of `url`, connected, that reconnects every 100 ms through outages.
pub(crate) async fn connect(url: &str) -> async_nats::Client {
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(url)
        .await
        .expect("the client connects");
    let started = Instant::now();
    while client.connection_state() != async_nats::connection::State::Connected {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{url} not connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _removed = std::fs::remove_dir_all(&self.dir);
    }
}
