//! `GET /ws`: the sidecar's WebSocket. The agent token (bearer only: a
//! cookie never opens a sidecar session) is checked before the upgrade;
//! the connection then belongs to a new [`ConnectionActor`], its socket
//! sending each frame at once (Nagle off, [`send_frames_at_once`]).

use std::any::Any;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use actix::{Actor, AsyncContext};
use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use actix_web::{web, HttpRequest, HttpResponse};
use agentcom_protocol::MAX_FRAME_BYTES;
use nix::sys::socket::{setsockopt, sockopt};

use crate::actors::connection::{ConnSettings, ConnectionActor};
use crate::actors::messages::Lookup;
use crate::http::error::HttpError;
use crate::http::{auth, AppState};

/// A connection's socket, noted when it is accepted (`on_connect`), so
/// that one which becomes a sidecar's WebSocket can have Nagle turned off.
struct Socket(RawFd);

/// Note the socket of a connection just accepted (plain or TLS).
pub(crate) fn remember_socket(conn: &dyn Any, ext: &mut Extensions) {
    let fd = if let Some(tcp) = conn.downcast_ref::<TcpStream>() {
        tcp.as_raw_fd()
    } else if let Some(tls) = conn.downcast_ref::<TlsStream<TcpStream>>() {
        tls.as_raw_fd()
    } else {
        return;
    };
    ext.insert(Socket(fd));
}

/// Send each frame on this connection at once (`TCP_NODELAY`).
///
/// With Nagle's algorithm on, a frame written while the last one is not
/// yet acknowledged waits for that acknowledgement, and a sidecar that
/// has nothing to send back delays it (Linux: up to 40 ms). Measured: one
/// `assign` in five at an idle agent pushed 20–25 ms late. Only the
/// WebSocket: turning it off on every connection cost 11–16 % of the
/// lifecycles, on the WebSocket alone nothing measurable
/// (docs/benchmarks.md, decision 0018).
#[allow(unsafe_code)]
fn send_frames_at_once(req: &HttpRequest) {
    let Some(Socket(fd)) = req.conn_data::<Socket>() else {
        return;
    };
    // SAFETY: the fd is this request's connection's socket, which stays
    // open at least while the request is handled, and it is borrowed only
    // for the one call below.
    let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
    if let Err(e) = setsockopt(&fd, sockopt::TcpNoDelay, &true) {
        tracing::debug!(error = %e, "could not turn Nagle off for a sidecar's socket");
    }
}

pub(crate) async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let token = auth::bearer(&req).ok_or_else(|| {
        HttpError::unauthorized("missing agent token: send Authorization: Bearer <agent token>")
    })?;
    let agent_id = state
        .directory
        .agent_for(&token)
        .ok_or_else(|| HttpError::unauthorized("invalid agent token"))?;
    let agent = state
        .registry
        .send(Lookup {
            id: agent_id.clone(),
        })
        .await?
        .ok_or_else(|| HttpError::unauthorized("the agent was revoked"))?;
    send_frames_at_once(&req);
    let (response, ws, stream) = actix_ws::handle(&req, payload)
        .map_err(|e| HttpError::bad_request(format!("not a WebSocket upgrade: {e}")))?;
    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    let stats = state.stats.clone();
    let s = &state.settings;
    let settings = ConnSettings {
        hello_timeout: Duration::from_secs(s.timeouts.hello_timeout_s),
        messages_per_s: s.limits.agent_messages_per_s,
        messages_burst: s.limits.agent_messages_burst,
    };
    ConnectionActor::create(move |ctx| {
        ctx.add_stream(stream);
        ConnectionActor::new(agent_id, agent, settings, ws, stats, ctx)
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{App, HttpServer};
    use agentcom_tls::PemFile;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use std::io::{Read, Write};
    use std::sync::Arc;

    /// Whether Nagle is off for the socket of `req`'s connection.
    #[allow(unsafe_code)]
    fn nodelay_of(req: &HttpRequest) -> bool {
        let Socket(fd) = req.conn_data::<Socket>().expect("the socket was noted");
        // SAFETY: as in `send_frames_at_once`.
        let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
        nix::sys::socket::getsockopt(&fd, sockopt::TcpNoDelay).unwrap()
    }

    async fn turned_off(req: HttpRequest) -> HttpResponse {
        send_frames_at_once(&req);
        HttpResponse::Ok().body(nodelay_of(&req).to_string())
    }

    async fn left_alone(req: HttpRequest) -> HttpResponse {
        HttpResponse::Ok().body(nodelay_of(&req).to_string())
    }

    /// GET `path` over `stream`; the body.
    fn get(mut stream: impl Read + Write, path: &str) -> String {
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text.rsplit("\r\n\r\n").next().unwrap().to_string()
    }

    /// A server with one worker that notes each connection's socket, over
    /// TLS when given a configuration: its address and handle.
    fn serve(
        tls: Option<agentcom_tls::ServerConfig>,
    ) -> (std::net::SocketAddr, actix_web::dev::ServerHandle) {
        let server = HttpServer::new(|| {
            App::new()
                .route("/ws", web::get().to(turned_off))
                .route("/api", web::get().to(left_alone))
        })
        .on_connect(remember_socket)
        .workers(1);
        let server = match tls {
            Some(config) => server.bind_rustls_0_23("127.0.0.1:0", config),
            None => server.bind("127.0.0.1:0"),
        }
        .unwrap();
        let addr = server.addrs()[0];
        let running = server.run();
        let handle = running.handle();
        actix_rt::spawn(running);
        (addr, handle)
    }

    #[actix_rt::test]
    async fn a_sidecars_socket_sends_each_frame_at_once_over_tcp_and_tls() {
        // Plain TCP.
        let (addr, handle) = serve(None);
        let plain = |path: &'static str| {
            actix_rt::task::spawn_blocking(move || {
                get(std::net::TcpStream::connect(addr).unwrap(), path)
            })
        };
        assert_eq!(plain("/ws").await.unwrap(), "true");
        assert_eq!(
            plain("/api").await.unwrap(),
            "false",
            "other connections keep Nagle"
        );
        handle.stop(true).await;

        // TLS, with a CA and a certificate made here.
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let (ca_file, cert_file, key_file) = (
            write("ca.pem", ca.pem()),
            write("cert.pem", cert.pem()),
            write("key.pem", key.serialize_pem()),
        );
        let config = agentcom_tls::server_config(
            PemFile::new("tls.cert_file", &cert_file),
            PemFile::new("tls.key_file", &key_file),
        )
        .unwrap();
        let client =
            Arc::new(agentcom_tls::client_config(Some(PemFile::new("ca_file", &ca_file))).unwrap());
        let (addr, handle) = serve(Some(config));
        let tls = |path: &'static str| {
            let client = client.clone();
            actix_rt::task::spawn_blocking(move || {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(client, name).unwrap();
                let tcp = std::net::TcpStream::connect(addr).unwrap();
                get(rustls::StreamOwned::new(conn, tcp), path)
            })
        };
        assert_eq!(tls("/ws").await.unwrap(), "true");
        assert_eq!(tls("/api").await.unwrap(), "false");
        handle.stop(true).await;
    }
}
