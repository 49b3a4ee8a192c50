//! Serving the admin surface alone, on an address of its own.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use flext_types::{FlextError, FlextResult};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admin::Admin;

/// The port [`ServeConfig::default`] binds.
pub const DEFAULT_PORT: u16 = 9180;

/// Where [`Admin::serve`] listens: `127.0.0.1:9180` unless told otherwise, so the admin
/// surface is reachable from the machine only until an address says more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeConfig {
    addr: SocketAddr,
}

impl ServeConfig {
    /// Listens on `127.0.0.1:{port}` (0: a free port the system picks).
    pub fn local(port: u16) -> Self {
        Self {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        }
    }

    /// Listens on `addr`, which may be every interface (`0.0.0.0:9180`).
    pub fn at(addr: SocketAddr) -> Self {
        Self { addr }
    }

    /// Parses an address from configuration: `host:port` (`0.0.0.0:9180`, `[::1]:9180`)
    /// or a port alone (on 127.0.0.1). Anything else is an `INVALID_ARGUMENT` naming it.
    pub fn parse(text: &str) -> FlextResult<Self> {
        let text = text.trim();
        if let Ok(port) = text.parse::<u16>() {
            return Ok(Self::local(port));
        }
        text.parse::<SocketAddr>().map(Self::at).map_err(|_| {
            FlextError::invalid_argument(format!(
                "Invalid admin address: {text:?}. Expected host:port (127.0.0.1:9180, \
                 [::1]:9180) or a port"
            ))
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self::local(DEFAULT_PORT)
    }
}

/// A running admin server; [`shutdown`](AdminServer::shutdown) stops it, and so does
/// dropping it.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Admin {
    /// Serves the [`router`](Admin::router) alone on `config`'s address. An address that
    /// cannot be bound (taken, not this machine's) is an `UNAVAILABLE` naming it.
    pub async fn serve(&self, config: ServeConfig) -> FlextResult<AdminServer> {
        let listener = TcpListener::bind(config.addr).await.map_err(|e| {
            FlextError::unavailable(format!(
                "The admin surface cannot listen on {}: {e}",
                config.addr
            ))
        })?;
        let addr = listener.local_addr().map_err(|e| {
            FlextError::unavailable(format!("The admin listener has no address: {e}"))
        })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%addr, "admin surface listening");
        Ok(AdminServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

impl AdminServer {
    /// The address it listens on (with the port the system picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The dashboard's address: `http://{addr}/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops accepting connections, lets requests in progress finish, and waits for the
    /// server to end. A server that failed is an `OPERATION_ERROR` saying why.
    pub async fn shutdown(mut self) -> FlextResult<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(FlextError::operation(format!(
                "The admin server failed: {e}"
            ))),
            Err(e) => Err(FlextError::operation(format!(
                "The admin server ended: {e}"
            ))),
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_say_what_is_wrong() {
        assert_eq!(ServeConfig::default().addr().to_string(), "127.0.0.1:9180");
        assert_eq!(
            ServeConfig::parse("8080").map(|c| c.addr().to_string()),
            Ok("127.0.0.1:8080".to_owned())
        );
        assert_eq!(
            ServeConfig::parse(" 0.0.0.0:81 ").map(|c| c.addr().to_string()),
            Ok("0.0.0.0:81".to_owned())
        );
        assert_eq!(
            ServeConfig::parse("[::1]:9").map(|c| c.addr().port()),
            Ok(9)
        );
        for bad in ["", "localhost", "1.2.3.4", "99999", "h:x"] {
            let error = ServeConfig::parse(bad).unwrap_err();
            assert_eq!(error.code(), flext_constants::ErrorCode::InvalidArgument);
            assert!(error.message().contains("Invalid admin address"), "{error}");
        }
    }
}
