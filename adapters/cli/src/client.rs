//! The blocking client of a node's control API, as the demo polls it,
//! `hedgerow kv` asks it and the black-box tests drive it: one request,
//! an overall timeout, the status and the body back whatever the status
//! (an error answer is still an answer). HTTP is `ureq`'s; this module
//! only shapes the call.

use std::net::SocketAddr;
use std::time::Duration;

/// Largest answer body read (a `/metrics` page or a KV listing is far
/// smaller).
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// Sends `method path` with `body` to `addr` (plain HTTP) and returns the
/// status code and the body. `GET`, `HEAD` and `DELETE` send no body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    request_with(addr, method, path, body, timeout, None)
}

/// [`request`] with an `Authorization` header (a node's
/// `--http-token-file`; see [`crate::auth::Token::header_value`]).
pub fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
    authorization: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_idle_connections(0)
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let auth = |r: ureq::RequestBuilder<ureq::typestate::WithoutBody>| match authorization {
        Some(a) => r.header("Authorization", a),
        None => r,
    };
    let auth_body = |r: ureq::RequestBuilder<ureq::typestate::WithBody>| match authorization {
        Some(a) => r.header("Authorization", a),
        None => r,
    };
    let answer = match method {
        "GET" => auth(agent.get(&url)).call(),
        "HEAD" => auth(agent.head(&url)).call(),
        "DELETE" => auth(agent.delete(&url)).call(),
        "POST" => auth_body(agent.post(&url)).send(body),
        "PUT" => auth_body(agent.put(&url)).send(body),
        "PATCH" => auth_body(agent.patch(&url)).send(body),
        other => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("unsupported HTTP method {other}"),
            ))
        }
    };
    let mut answer = answer.map_err(into_io)?;
    let status = answer.status().as_u16();
    let body = answer
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(into_io)?;
    Ok((status, body))
}

fn into_io(e: ureq::Error) -> std::io::Error {
    match e {
        ureq::Error::Io(e) => e,
        ureq::Error::Timeout(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, e.to_string()),
        e => std::io::Error::other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    /// A server that answers one connection with `response`.
    fn serve_once(response: &'static [u8]) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(response);
        });
        addr
    }

    #[test]
    fn an_error_status_comes_back_with_its_body() {
        let addr = serve_once(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        );
        let got = request(addr, "GET", "/v1/status", b"", Duration::from_secs(5)).unwrap();
        assert_eq!(got, (503, b"{}".to_vec()));
    }

    #[test]
    fn nobody_listening_and_odd_methods_are_errors() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(request(addr, "GET", "/", b"", Duration::from_secs(2)).is_err());
        let err = request(addr, "BREW", "/", b"", Duration::from_secs(2)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}
