//! /healthz, /livez, /readyz and /metrics over HTTPS (a self-signed
//! certificate when none is given, as upstream) behind delegated
//! authentication and authorisation ([`crate::delegation`]), and plain HTTP
//! without either only on --insecure-port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::delegation::{Gate, Verdict};
use crate::leader::ElectionState;

/// The health of the process, as the endpoints report it.
#[derive(Debug, Default)]
pub struct Health {
    elections: Mutex<Vec<Arc<ElectionState>>>,
    /// Started controllers (short names) and, once its task has ended
    /// while it should run, why: upstream's checks are pings; a dead task
    /// fails /healthz here, so the kubelet's liveness probe restarts us.
    controllers: Mutex<Vec<(String, ControllerCheck)>>,
    caches_synced: AtomicBool,
    leading: AtomicBool,
    /// The /configz body, set once at start.
    configz: std::sync::OnceLock<String>,
    /// What /metrics serves, beside prometheus' default registry.
    metrics: prometheus::Registry,
}

impl Health {
    /// Health whose /metrics serves `metrics`.
    pub fn serving(metrics: prometheus::Registry) -> Self {
        Self {
            metrics,
            ..Self::default()
        }
    }

    pub fn metrics(&self) -> &prometheus::Registry {
        &self.metrics
    }

    pub fn add_election(&self, state: Arc<ElectionState>) {
        self.elections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(state);
    }

    /// Registers (or re-registers) a running controller; the handle reports
    /// its task's end.
    pub fn add_controller(&self, name: &str) -> ControllerCheck {
        let check = ControllerCheck(Arc::new(Mutex::new(None)));
        let mut controllers = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        controllers.retain(|(n, _)| n != name);
        controllers.push((name.to_string(), check.clone()));
        check
    }

    /// Why the controller `name` failed, if it did.
    #[cfg(test)]
    pub fn controller_failure(&self, name: &str) -> Option<String> {
        let controllers = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        let (_, check) = controllers.iter().find(|(n, _)| n == name)?;
        check.failure()
    }

    /// This process runs controllers (leads, or runs without election).
    pub fn set_leading(&self) {
        self.leading.store(true, Ordering::SeqCst);
    }

    /// The component configuration /configz serves (crate::configz).
    pub fn set_configz(&self, body: &serde_json::Value) {
        let _ = self.configz.set(body.to_string());
    }

    pub fn set_caches_synced(&self) {
        self.caches_synced.store(true, Ordering::SeqCst);
    }

    /// (check name, result) for /healthz and /livez.
    fn health_checks(&self) -> Vec<(String, Result<(), String>)> {
        let mut checks = vec![("ping".to_string(), Ok(()))];
        for e in self
            .elections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            checks.push((e.check_name.clone(), e.check()));
        }
        for c in self
            .controllers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            checks.push((c.0.clone(), c.1.failure().map_or(Ok(()), Err)));
        }
        checks
    }

    /// /readyz adds: a leader is ready once its caches are filled; a standby
    /// is ready to take over.
    fn ready_checks(&self) -> Vec<(String, Result<(), String>)> {
        let mut checks = self.health_checks();
        let synced =
            !self.leading.load(Ordering::SeqCst) || self.caches_synced.load(Ordering::SeqCst);
        checks.push((
            "informer-sync".to_string(),
            if synced {
                Ok(())
            } else {
                Err("caches not synced yet".to_string())
            },
        ));
        checks
    }
}

/// One controller's /healthz check.
#[derive(Debug, Clone)]
pub struct ControllerCheck(Arc<Mutex<Option<String>>>);

impl ControllerCheck {
    pub fn fail(&self, reason: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    fn failure(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff")
        .body(Full::new(Bytes::from(body)))
        .expect("static response")
}

/// Upstream's healthz handler: "ok", or per-check lines and a failure.
fn checks_response(
    endpoint: &str,
    sub: Option<&str>,
    verbose: bool,
    checks: Vec<(String, Result<(), String>)>,
) -> Response<Full<Bytes>> {
    if let Some(name) = sub {
        return match checks.iter().find(|(n, _)| n == name) {
            Some((_, Ok(()))) => text(StatusCode::OK, "ok".into()),
            Some((_, Err(e))) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal server error: {e}\n"),
            ),
            None => text(StatusCode::NOT_FOUND, "404 page not found\n".into()),
        };
    }
    let failed = checks.iter().any(|(_, r)| r.is_err());
    if !failed && !verbose {
        return text(StatusCode::OK, "ok".into());
    }
    let mut body = String::new();
    for (name, result) in &checks {
        match result {
            Ok(()) => body.push_str(&format!("[+]{name} ok\n")),
            Err(_) => body.push_str(&format!("[-]{name} failed: reason withheld\n")),
        }
    }
    if failed {
        body.push_str(&format!("{endpoint} check failed\n"));
        text(StatusCode::INTERNAL_SERVER_ERROR, body)
    } else {
        body.push_str(&format!("{endpoint} check passed\n"));
        text(StatusCode::OK, body)
    }
}

/// The application's registry, then any family a vendor's code put in
/// prometheus' default registry under a name the application does not use
/// (on a clash the application's wins: one family per name, as a scraper
/// requires).
fn gather(ours: &prometheus::Registry) -> Vec<prometheus::proto::MetricFamily> {
    let mut families = ours.gather();
    let taken: std::collections::HashSet<String> =
        families.iter().map(|f| f.name().to_string()).collect();
    families.extend(
        prometheus::gather()
            .into_iter()
            .filter(|f| !taken.contains(f.name())),
    );
    families.sort_by(|a, b| a.name().cmp(b.name()));
    families
}

fn metrics(ours: &prometheus::Registry) -> Response<Full<Bytes>> {
    use prometheus::Encoder as _;
    let encoder = prometheus::TextEncoder::new();
    let mut buf = Vec::new();
    if let Err(e) = encoder.encode(&gather(ours), &mut buf) {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}\n"),
        );
    }
    Response::builder()
        .header("content-type", encoder.format_type())
        .body(Full::new(Bytes::from(buf)))
        .expect("static response")
}

pub fn route(health: &Health, path: &str, query: &str) -> Response<Full<Bytes>> {
    let verbose = query
        .split('&')
        .any(|p| p == "verbose" || p.starts_with("verbose="));
    let path = path.trim_end_matches('/');
    for endpoint in ["healthz", "livez", "readyz"] {
        let prefix = format!("/{endpoint}");
        if path == prefix || path.starts_with(&format!("{prefix}/")) {
            let sub = path.strip_prefix(&format!("{prefix}/"));
            let checks = if endpoint == "readyz" {
                health.ready_checks()
            } else {
                health.health_checks()
            };
            return checks_response(endpoint, sub, verbose, checks);
        }
    }
    if path == "/metrics" {
        return metrics(&health.metrics);
    }
    if path == "/configz"
        && let Some(body) = health.configz.get()
    {
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("x-content-type-options", "nosniff")
            .body(Full::new(Bytes::from(body.clone())))
            .expect("static response");
    }
    text(StatusCode::NOT_FOUND, "404 page not found\n".into())
}

/// A JSON `Status` body, as the apiserver library writes 401 and 403.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .header("x-content-type-options", "nosniff")
        .body(Full::new(Bytes::from(format!("{body}\n"))))
        .expect("static response")
}

async fn handle(
    health: Arc<Health>,
    gate: Option<Arc<Gate>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let uri = req.uri();
    // The gate decides on the path that is served, so "/metrics/" is
    // authorised as "/metrics" and cannot slip through a prefix rule.
    let path = match uri.path().trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    };
    if let Some(gate) = gate {
        let authorization = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match gate.check(req.method().as_str(), path, authorization).await {
            Verdict::Allow => {}
            Verdict::Unauthorized => {
                return Ok(status(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "Unauthorized",
                ));
            }
            Verdict::Forbidden(message) => {
                return Ok(status(StatusCode::FORBIDDEN, "Forbidden", &message));
            }
            // Plain text, as upstream's InternalError.
            Verdict::Error(message) => {
                return Ok(text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{message}\n"),
                ));
            }
        }
    }
    Ok(route(&health, path, uri.query().unwrap_or_default()))
}

async fn serve_connection<IO>(io: IO, health: Arc<Health>, gate: Option<Arc<Gate>>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |req| handle(Arc::clone(&health), gate.clone(), req));
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The TLS identity: the given files, or a self-signed pair (written to
/// --cert-dir as cloud-controller-manager.crt/.key when set, reused after).
/// The secure port's TLS: the given certificate and key, or a self-signed
/// pair (kept in `cert_dir` when given); TLS 1.3 only when `tls13_only`.
/// Errors name the flag and the file.
pub fn tls_config(
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    cert_dir: Option<&Path>,
    tls13_only: bool,
) -> Result<rustls::ServerConfig, String> {
    let (cert_pem, key_pem, cert_source, key_source) = match (cert_file, key_file) {
        (Some(c), Some(k)) => (
            std::fs::read(c).map_err(|e| format!("--tls-cert-file={}: {e}", c.display()))?,
            std::fs::read(k).map_err(|e| format!("--tls-private-key-file={}: {e}", k.display()))?,
            format!("--tls-cert-file={}", c.display()),
            format!("--tls-private-key-file={}", k.display()),
        ),
        _ => {
            let (c, k) = self_signed(cert_dir)?;
            (
                c,
                k,
                "the self-signed certificate".into(),
                "the self-signed key".into(),
            )
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_source}: not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{cert_source}: no PEM certificate in it (want -----BEGIN CERTIFICATE-----)"
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{key_source}: no PEM private key in it (want -----BEGIN PRIVATE KEY-----, RSA or EC)"
        ),
        e => format!("{key_source}: not a PEM private key: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider);
    let builder = if tls13_only {
        builder.with_protocol_versions(&[&rustls::version::TLS13])
    } else {
        builder.with_safe_default_protocol_versions()
    }
    .map_err(|e| e.to_string())?;
    builder
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{cert_source} and {key_source}: {e}"))
}

fn self_signed(cert_dir: Option<&Path>) -> Result<(Vec<u8>, Vec<u8>), String> {
    let paths: Option<(PathBuf, PathBuf)> = cert_dir.map(|d| {
        (
            d.join("cloud-controller-manager.crt"),
            d.join("cloud-controller-manager.key"),
        )
    });
    if let Some((c, k)) = &paths
        && let (Ok(cert), Ok(key)) = (std::fs::read(c), std::fs::read(k))
    {
        return Ok((cert, key));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost@overcast-ccm");
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let (cert, key) = (cert.pem().into_bytes(), key.serialize_pem().into_bytes());
    if let Some((c, k)) = &paths {
        if let Some(dir) = c.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("--cert-dir={}: {e}", dir.display()))?;
        }
        std::fs::write(c, &cert).map_err(|e| format!("writing {}: {e}", c.display()))?;
        std::fs::write(k, &key).map_err(|e| format!("writing {}: {e}", k.display()))?;
    }
    Ok((cert, key))
}

/// Binds now (so a busy port fails start-up) and serves until dropped;
/// requests pass `gate` first when there is one.
pub async fn bind(
    addr: SocketAddr,
    tls: Option<rustls::ServerConfig>,
    health: Arc<Health>,
    gate: Option<Arc<Gate>>,
    reuse_port: bool,
) -> Result<impl std::future::Future<Output = ()>, String> {
    let listener =
        listen(addr, reuse_port).map_err(|e| format!("failed to listen on {addr}: {e}"))?;
    let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
    tracing::info!(%addr, tls = acceptor.is_some(), "serving health and metrics");
    Ok(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let health = Arc::clone(&health);
            let gate = gate.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => serve_connection(tls, health, gate).await,
                        Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                    },
                    None => serve_connection(stream, health, gate).await,
                }
            });
        }
    })
}

/// A listener with SO_REUSEADDR (as tokio's own bind) and, for
/// --permit-port-sharing, SO_REUSEPORT.
fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: Response<Full<Bytes>>) -> (StatusCode, String) {
        use http_body_util::BodyExt as _;
        let status = r.status();
        let bytes = futures::executor::block_on(r.into_body().collect())
            .unwrap()
            .to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[test]
    fn healthz_lists_checks_when_verbose_and_sub_paths_answer_alone() {
        let h = Health::default();
        h.add_controller("cloud-node");
        assert_eq!(
            body(route(&h, "/healthz", "")),
            (StatusCode::OK, "ok".into())
        );
        let (status, text) = body(route(&h, "/healthz", "verbose"));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text, "[+]ping ok\n[+]cloud-node ok\nhealthz check passed\n");
        assert_eq!(body(route(&h, "/healthz/cloud-node", "")).0, StatusCode::OK);
        assert_eq!(
            body(route(&h, "/healthz/nope", "")).0,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn metrics_serve_ours_and_a_vendors_default_registry_one_family_per_name() {
        let ours = prometheus::Registry::new();
        let mine = prometheus::IntCounter::new("clash_total", "the application's").unwrap();
        mine.inc_by(7);
        ours.register(Box::new(mine)).unwrap();
        // A vendor's code, in prometheus' default registry: one name of its
        // own and one the application also uses.
        let theirs = prometheus::IntCounter::new("vendor_only_total", "a vendor's").unwrap();
        prometheus::register(Box::new(theirs.clone())).unwrap();
        prometheus::register(Box::new(
            prometheus::IntCounter::new("clash_total", "a vendor's").unwrap(),
        ))
        .unwrap();
        let h = Health::serving(ours);
        let (status, text) = body(route(&h, "/metrics", ""));
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("vendor_only_total 0"), "{text}");
        assert_eq!(text.matches("# TYPE clash_total").count(), 1, "{text}");
        assert!(text.contains("clash_total 7"), "{text}");
    }

    #[test]
    fn a_controller_whose_task_ended_fails_healthz() {
        let h = Health::default();
        let check = h.add_controller("route");
        h.add_controller("cloud-node");
        check.fail("the controller panicked: boom".into());
        let (status, text) = body(route(&h, "/healthz", ""));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(text.contains("[-]route failed"), "{text}");
        assert!(text.contains("[+]cloud-node ok"), "{text}");
        assert_eq!(
            body(route(&h, "/livez", "")).0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        // Started again (a new term as leader): healthy again.
        h.add_controller("route");
        assert_eq!(body(route(&h, "/healthz", "")).0, StatusCode::OK);
    }

    #[test]
    fn readyz_waits_for_caches_only_on_the_leader() {
        let h = Health::default();
        assert_eq!(
            body(route(&h, "/readyz", "")).0,
            StatusCode::OK,
            "a standby is ready"
        );
        h.set_leading();
        let (status, text) = body(route(&h, "/readyz", ""));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(text.contains("[-]informer-sync failed"), "{text}");
        h.set_caches_synced();
        assert_eq!(body(route(&h, "/readyz", "")).0, StatusCode::OK);
    }

    #[test]
    fn self_signed_certificates_are_written_to_the_cert_dir_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        tls_config(None, None, Some(dir.path()), false).unwrap();
        let first = std::fs::read(dir.path().join("cloud-controller-manager.crt")).unwrap();
        tls_config(None, None, Some(dir.path()), false).unwrap();
        assert_eq!(
            first,
            std::fs::read(dir.path().join("cloud-controller-manager.crt")).unwrap()
        );
        let err = tls_config(
            Some(Path::new("/nonexistent.crt")),
            Some(Path::new("/x.key")),
            None,
            false,
        )
        .unwrap_err();
        assert!(err.starts_with("--tls-cert-file=/nonexistent.crt"), "{err}");
    }

    #[test]
    fn garbage_certificate_files_are_named_with_their_flag() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let good = dir.path().join("good");
        tls_config(None, None, Some(&good), false).unwrap();
        let (cert, key) = (
            good.join("cloud-controller-manager.crt"),
            good.join("cloud-controller-manager.key"),
        );
        let err = tls_config(Some(&garbage), Some(&key), None, false).unwrap_err();
        assert_eq!(
            err,
            format!(
                "--tls-cert-file={}: no PEM certificate in it (want -----BEGIN CERTIFICATE-----)",
                garbage.display()
            )
        );
        let err = tls_config(Some(&cert), Some(&garbage), None, false).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "--tls-private-key-file={}: no PEM private key",
                garbage.display()
            )),
            "{err}"
        );
        // The key of another certificate: both named.
        let other = dir.path().join("other");
        tls_config(None, None, Some(&other), false).unwrap();
        let err = tls_config(
            Some(&cert),
            Some(&other.join("cloud-controller-manager.key")),
            None,
            false,
        )
        .unwrap_err();
        assert!(
            err.contains("--tls-cert-file=") && err.contains("--tls-private-key-file="),
            "{err}"
        );
    }
}
