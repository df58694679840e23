//! Running the `[[track]]` service checks: each on its own task, every interval, each probe
//! bounded by its timeout. Only results leave here; whether the node still deserves the VIP is
//! decided in the core (`failover::track`). Nothing here shares a thread or a lock with the
//! advert path, so a hung service never delays an advert.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::config::{Check, TrackSettings};

/// One probe's result for check `index`.
pub type ProbeResult = (usize, Result<(), String>);

/// Starts a task per check; results arrive on the returned channel.
pub fn spawn(tracks: &[TrackSettings]) -> mpsc::UnboundedReceiver<ProbeResult> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (index, t) in tracks.iter().cloned().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(t.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let result = match tokio::time::timeout(t.timeout, probe(&t.check)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {} ms", t.timeout.as_millis())),
                };
                if tx.send((index, result)).is_err() {
                    return;
                }
            }
        });
    }
    rx
}

async fn probe(check: &Check) -> Result<(), String> {
    match check {
        Check::Tcp(addr) => TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| format!("connect {addr}: {e}")),
        Check::Script(path) => script(path).await,
        Check::Process(name) => {
            let name = name.clone();
            tokio::task::spawn_blocking(move || process_running(&name))
                .await
                .map_err(|e| e.to_string())?
        }
        Check::Http {
            tls,
            host,
            port,
            path,
            expect,
            ca,
        } => {
            let status = http_get(*tls, host, *port, path, ca.as_deref()).await?;
            if status == *expect {
                Ok(())
            } else {
                Err(format!("HTTP status {status}, expected {expect}"))
            }
        }
    }
}

/// Kills a script's whole process group when the probe ends, whether it finished or its
/// timeout dropped it: nothing it started outlives the probe.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            crate::hooks::kill_group(pid);
        }
    }
}

async fn script(path: &std::path::Path) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(path);
    for var in crate::hooks::SECRET_ENV {
        cmd.env_remove(var);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let _group = Group(child.id());
    let status = child.wait().await.map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} {status}", path.display()))
    }
}

/// Whether a process named `name` runs (its `/proc/PID/comm`).
fn process_running(name: &str) -> Result<(), String> {
    let dir = std::fs::read_dir("/proc").map_err(|e| format!("reading /proc: {e}"))?;
    let found = dir.filter_map(Result::ok).any(|e| {
        e.file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            && std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end_matches('\n') == name)
    });
    if found {
        Ok(())
    } else {
        Err(format!("no process named {name}"))
    }
}

/// GET `path` on `host:port` over HTTP/1.1 (TLS verified against `ca`, else the public web
/// roots); the response's status.
async fn http_get(
    tls: bool,
    host: &str,
    port: u16,
    path: &str,
    ca: Option<&std::path::Path>,
) -> Result<u16, String> {
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "cluster-agent")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    if !tls {
        return send(TokioIo::new(stream), request).await;
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(ca)?));
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let stream = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS with {host}: {e}"))?;
    send(TokioIo::new(stream), request).await
}

async fn send<T>(io: TokioIo<T>, request: hyper::Request<Empty<Bytes>>) -> Result<u16, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    // The connection is driven beside the request and ends with it (the caller's timeout
    // drops both).
    let driver = tokio::spawn(conn);
    let response = sender.send_request(request).await;
    driver.abort();
    Ok(response.map_err(|e| e.to_string())?.status().as_u16())
}

fn tls_config(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| format!("reading {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTPS service on loopback with a certificate for 127.0.0.1 from its own CA: the check
    /// passes with that CA, fails without it (the public roots do not know it), and reads the
    /// status the service answers.
    #[tokio::test]
    async fn an_https_check_verifies_the_service_against_its_ca() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = std::env::temp_dir().join(format!("probe-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            // Two connections: the verified one, then the one the client refuses.
            for _ in 0..2 {
                let (s, _) = listener.accept().await.unwrap();
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let mut buf = [0u8; 1024];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    let _ = tls.shutdown().await;
                }
            }
        });
        let status = http_get(true, "127.0.0.1", port, "/health", Some(&ca)).await;
        assert_eq!(status, Ok(503));
        let refused = http_get(true, "127.0.0.1", port, "/health", None).await;
        assert!(
            refused.is_err_and(|e| e.contains("TLS")),
            "an unknown CA was accepted"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_process_check_finds_itself_and_misses_what_does_not_run() {
        let own = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(process_running(own.trim_end()), Ok(()));
        assert!(process_running("no-such-proc-x").is_err());
        assert!(
            probe(&Check::Tcp("127.0.0.1:1".parse().unwrap()))
                .await
                .is_err()
        );
    }
}
