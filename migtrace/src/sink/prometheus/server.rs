//! The `/metrics` endpoint: `--listen` checked and bound, and a thread that serves it with
//! hyper's HTTP/1 server on a tokio runtime of its own, in the format the client's `Accept`
//! header asks for. Any local user can connect, so the server holds limits
//! (docs/reliability.md, "Hostile peers"):
//! - at most [`MAX_CONNECTIONS`] at once: one more closes the oldest (a scraper's connection
//!   lasts milliseconds, so the oldest is one that holds a slot without asking anything), so
//!   idle connections cannot lock scrapers out;
//! - a request head of at most [`MAX_HEAD`] bytes (hyper answers 431 beyond), read within
//!   [`HEAD_TIMEOUT`];
//! - a connection lives at most [`CONNECTION_TIME`], however it behaves: a client that
//!   pipelines requests and never reads their answers holds one slot that long, no more;
//! - an accept that fails for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
//!   ENOMEM) waits 100 ms and goes on; any other failure of the listener ends the process
//!   with exit 1, so that a supervisor (`Restart=on-failure`) restarts it. tiny_http, used
//!   before, panicked in its thread on EMFILE and left a live process with no listener.
use std::{
    collections::VecDeque,
    convert::Infallible,
    net::{SocketAddr, TcpListener},
    sync::Arc,
    time::Duration,
};

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::task::AbortHandle;

use super::metrics::{to_text_004, Metrics};
use crate::error::Error;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// The largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send a request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection lives at the most.
pub const CONNECTION_TIME: Duration = Duration::from_secs(30);

/// Parses and checks `--listen`: ADDR:PORT, loopback unless `any`, and binds it now so that
/// a bad or busy address is an error before measuring starts.
pub fn bind(listen: &str, any: bool) -> Result<TcpListener, Error> {
    let addr: SocketAddr = listen.parse().map_err(|_| {
        Error::Usage(format!(
            "--listen {listen:?}: expected ADDR:PORT, e.g. 127.0.0.1:9464 or [::1]:9464"
        ))
    })?;
    if !addr.ip().is_loopback() && !any {
        return Err(Error::Usage(format!(
            "--listen {addr}: not a loopback address; add --listen-any to serve metrics beyond this host"
        )));
    }
    TcpListener::bind(addr).map_err(|e| Error::Usage(format!("--listen {addr}: cannot bind: {e}")))
}

/// Serves `/metrics` from `listener` in a background thread for the life of the process.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    if let Ok(a) = listener.local_addr() {
        eprintln!("migtrace: serving metrics on http://{a}/metrics");
    }
    listener.set_nonblocking(true)?;
    raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let e = rt.block_on(accept_loop(listener, metrics));
            eprintln!("migtrace: error: the metrics listener failed: {e}");
            std::process::exit(1);
        })?;
    Ok(())
}

/// Descriptors up to the hard limit: a scrape should not fail for the soft default of 1024.
fn raise_nofile() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid struct; failure leaves the limit as it was.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// Accepts and serves connections until the listener fails for good; returns why.
async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Error {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return e,
    };
    // The live connections, oldest first.
    let mut live: VecDeque<AbortHandle> = VecDeque::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                live.retain(|h| !h.is_finished());
                if live.len() >= MAX_CONNECTIONS {
                    if let Some(oldest) = live.pop_front() {
                        oldest.abort();
                    }
                }
                let task = tokio::spawn(serve_connection(stream, metrics.clone()));
                live.push_back(task.abort_handle());
            }
            Err(e) if transient(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return e,
        }
    }
}

/// An accept error that passes: out of descriptors or memory for now, or one connection's
/// trouble.
fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPROTO | libc::EPERM
        )
    ) || matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::Interrupted | K::WouldBlock
    )
}

/// One connection, within the head size, head time and lifetime limits.
async fn serve_connection(stream: tokio::net::TcpStream, m: Arc<Metrics>) {
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let m = m.clone();
        async move { Ok::<_, Infallible>(respond(&req, &m)) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), svc);
    let _ = tokio::time::timeout(CONNECTION_TIME, conn).await;
}

/// The response to one request: the metrics in the format asked for, or 404.
fn respond<B>(req: &Request<B>, m: &Metrics) -> Response<Full<Bytes>> {
    let text = |status: u16, ctype: &str, body: String| {
        Response::builder()
            .status(status)
            .header("Content-Type", ctype)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid static response")
    };
    if req.uri().path() != "/metrics" || req.method() != hyper::Method::GET {
        return text(
            404,
            "text/plain; charset=utf-8",
            "not found: try /metrics\n".into(),
        );
    }
    let openmetrics = req
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .any(|v| {
            v.to_str()
                .is_ok_and(|s| s.contains("application/openmetrics-text"))
        });
    if openmetrics {
        let ctype = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        text(200, ctype, m.openmetrics())
    } else {
        let ctype = "text/plain; version=0.0.4; charset=utf-8";
        text(200, ctype, to_text_004(&m.openmetrics()))
    }
}
