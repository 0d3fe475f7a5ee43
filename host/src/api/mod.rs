//! The HTTP API: hyper over HTTP/1.1 with keep-alive, JSON in and out, every amount in integer
//! cents in a field ending `_cents`, every error a JSON body `{"code": …, "message": …}` with a
//! stable code.
//!
//! - `routes`: the route table (each route with the caller it needs and the body it reads), the
//!   access layer in front of every handler, and the dispatch;
//! - `operations`: one handler per operation, each with its OpenAPI description; `answers`, the
//!   answer types the other modules do not own; `named_user`, bodies naming users by the app's
//!   own ids; `body`, strict JSON input; `error`, every error's status and code;
//! - `openapi`: the OpenAPI 3.1 document (`GET /v1/openapi.json`), built from those.

mod answers;
pub mod body;
mod error;
pub mod named_user;
pub mod openapi;
mod operations;
pub mod request_id;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use error::{ApiError, ERROR_CODES};
pub use routes::{SessionBody, VerifyBody, need_of, token_json};

use crate::app::App;

/// The most connections served at once. Past it, new connections wait in the kernel's accept
/// queue: the host sheds load by not reading rather than by running out of memory. With the body
/// limits below, buffered bodies stay under a gigabyte even if every connection sends one.
pub const CONNECTIONS_MAX: usize = 8 * 1024;

/// A client that has not sent a whole request head by then is disconnected, so idle or slow
/// connections cannot hold connection slots forever.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The largest request body read on most routes; a grant is about 200 bytes.
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;

/// The largest restore body: 256 tokens of at most 2 KiB each, with room to spare.
pub const RESTORE_BODY_BYTES_MAX: usize = 1024 * 1024;

/// A request body must arrive within this long, so a slow sender cannot hold a connection and
/// its buffer indefinitely.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Pause after a failed accept (for example, out of file descriptors), instead of spinning.
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Serves the API on `listener` until `shutdown` turns true.
pub async fn serve(app: Arc<App>, listener: TcpListener, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(routes::handle(&app, request).await) }
            });
            let connection = http1::Builder::new()
                .keep_alive(true)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
