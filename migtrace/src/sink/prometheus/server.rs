//! The `/metrics` endpoint: `--listen` checked and bound, and one thread (`tiny_http`)
//! that answers in the format the client's `Accept` header asks for.
use std::{
    net::{SocketAddr, TcpListener},
    sync::Arc,
};

use super::metrics::{to_text_004, Metrics};
use crate::error::Error;

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
    let server = tiny_http::Server::from_listener(listener, None)
        .map_err(|e| anyhow::anyhow!("starting the metrics server: {e}"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let resp = respond(&req, &metrics);
                let _ = req.respond(resp);
            }
        })?;
    Ok(())
}

/// The response to one request: the metrics in the format asked for, or 404.
fn respond(req: &tiny_http::Request, m: &Metrics) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let path = req.url().split('?').next().unwrap_or("");
    if path != "/metrics" || !matches!(req.method(), tiny_http::Method::Get) {
        return tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404);
    }
    let openmetrics = req.headers().iter().any(|h| {
        h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text")
    });
    let (body, ctype) = if openmetrics {
        (
            m.openmetrics(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            to_text_004(&m.openmetrics()),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let header = tiny_http::Header::from_bytes("Content-Type", ctype).expect("static header");
    tiny_http::Response::from_string(body).with_header(header)
}
