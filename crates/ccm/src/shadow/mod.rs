//! Shadow mode (`--shadow`): every enabled controller runs against the live
//! cluster and cloud beside the incumbent, takes no Lease, and changes
//! nothing. Each write to the apiserver goes out as a server-side dry run
//! (`dryRun=All`: validated and answered, never stored), and each mutating
//! cloud call becomes a read-only preview ([`cloud::ShadowCloud`]). What it
//! would have changed is a *divergence*: logged, counted in
//! `overcast_shadow_divergences{controller,kind}`, and written to
//! `--shadow-report` as JSON. A dry run that changes nothing (the incumbent
//! already did the same) clears the object's divergence.

pub mod cloud;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use http_body_util::{BodyExt as _, Either, Full};
use hyper::body::Bytes;
use kube::client::Body;
use serde::Serialize;
use serde_json::Value;
use tower::{Layer, Service};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `<prefix>_shadow_divergences{controller,kind}`: the prefix is the
/// binary's (`overcast` for overcast-ccm), so a vendor's dashboards read
/// their own name.
pub fn divergences_gauge(prefix: &str) -> prometheus::IntGaugeVec {
    prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            format!("{prefix}_shadow_divergences"),
            "Objects shadow mode would change now, by controller and kind",
        ),
        &["controller", "kind"],
    )
    .expect("the prefix was checked to make a valid metric name")
}

/// One object shadow mode would change, as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Divergence {
    pub controller: String,
    /// `Node`, `Service`, `LoadBalancer`, `Route`, ...
    pub kind: String,
    /// `name` or `namespace/name`.
    pub object: String,
    /// `patch`, `update`, `create`, `delete`, or the cloud call.
    pub action: String,
    /// The fields that would change, as `path: old -> new`.
    pub changes: Vec<String>,
    /// The write, kept to try again as a dry run: the divergence goes once
    /// it would change nothing (the incumbent did the same, or the object
    /// is gone), even if the controller never writes again.
    #[serde(skip)]
    pub write: Option<Write>,
}

/// A write to the apiserver, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// What a dry run of a write says.
enum Outcome {
    /// It would change these fields (empty: nothing), delete or create.
    Changes(Vec<String>),
    /// The object is gone: nothing to change.
    Gone,
    /// Cannot tell (the object unreadable, the dry run refused): left as is.
    Unknown,
}

/// The divergences now, kept per (controller, kind, object).
#[derive(Debug)]
pub struct Report {
    current: Mutex<BTreeMap<(String, String, String, String), Divergence>>,
    file: Option<PathBuf>,
    /// Divergences now, by controller and kind.
    gauge: prometheus::IntGaugeVec,
}

impl Report {
    /// A report with no divergence, written to `file` at once (so a
    /// report that stays empty is there to read).
    pub fn new(file: Option<PathBuf>, gauge: prometheus::IntGaugeVec) -> Self {
        if let Some(path) = &file
            && let Err(e) = write_atomically(path, &[])
        {
            tracing::warn!("--shadow-report={}: {e}", path.display());
        }
        Self {
            current: Mutex::default(),
            file,
            gauge,
        }
    }

    /// Records what would change (`changes` empty and not a delete or
    /// create: nothing would, and the object's divergence is cleared).
    pub fn record(&self, d: Divergence) {
        let converged = d.changes.is_empty() && matches!(d.action.as_str(), "patch" | "update");
        self.apply(d, converged);
    }

    /// Adds or replaces `d`, or with `converged` removes its entry.
    fn apply(&self, d: Divergence, converged: bool) {
        let key = (
            d.controller.clone(),
            d.kind.clone(),
            d.object.clone(),
            d.action.clone(),
        );
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let changed = if converged {
            current.remove(&key).is_some()
        } else {
            current.insert(key, d.clone()).as_ref() != Some(&d)
        };
        if !changed {
            return;
        }
        if converged {
            tracing::info!(controller = %d.controller, kind = %d.kind, object = %d.object, "shadow: no longer diverges");
        } else {
            tracing::info!(
                controller = %d.controller,
                kind = %d.kind,
                object = %d.object,
                action = %d.action,
                changes = ?d.changes,
                "shadow: would change"
            );
        }
        let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for (controller, kind, _, _) in current.keys() {
            *counts.entry((controller, kind)).or_default() += 1;
        }
        self.gauge.reset();
        for ((controller, kind), n) in counts {
            self.gauge.with_label_values(&[controller, kind]).set(n);
        }
        if let Some(path) = &self.file {
            let all: Vec<&Divergence> = current.values().collect();
            if let Err(e) = write_atomically(path, &all) {
                tracing::warn!("--shadow-report={}: {e}", path.display());
            }
        }
    }

    /// Every `period`, each divergence with a kept write is tried again
    /// as a dry run through `plain`, and goes once it would change nothing.
    pub async fn recheck_every(self: Arc<Self>, plain: kube::Client, period: std::time::Duration) {
        let mut ticker = tokio::time::interval(period);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            for d in self.divergences() {
                let Some(write) = d.write.clone() else {
                    continue;
                };
                match evaluate(&plain, &write).await {
                    Ok((_, _, Outcome::Gone)) => self.apply(d, true),
                    Ok((_, _, Outcome::Changes(changes)))
                        if changes.is_empty()
                            && matches!(d.action.as_str(), "patch" | "update") =>
                    {
                        self.apply(d, true);
                    }
                    Ok((_, _, Outcome::Changes(changes)))
                        if d.action == "patch" || d.action == "update" =>
                    {
                        self.apply(Divergence { changes, ..d }, false);
                    }
                    _ => {}
                }
            }
        }
    }

    pub fn divergences(&self) -> Vec<Divergence> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.values().cloned().collect()
    }
}

fn write_atomically(path: &std::path::Path, all: &[&Divergence]) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(all).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text + "\n")?;
    std::fs::rename(&tmp, path)
}

/// What a write addresses: `/api/v1/nodes/n1/status` is (Node, "n1",
/// Some("status")).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: String,
    pub object: String,
    pub subresource: Option<String>,
}

/// The kind (from the resource's plural), object and subresource of an API
/// path; `None` for a collection without a name (a create).
pub fn target(path: &str) -> (String, Option<Target>) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest = match parts.first() {
        Some(&"api") => parts.get(2..).unwrap_or_default(),
        Some(&"apis") => parts.get(3..).unwrap_or_default(),
        _ => &[],
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        _ => (None, rest),
    };
    let kind = |plural: &str| -> String {
        let singular = plural
            .strip_suffix("es")
            .filter(|s| s.ends_with("ss") || s.ends_with("ch"))
            .map(str::to_string)
            .unwrap_or_else(|| plural.strip_suffix('s').unwrap_or(plural).to_string());
        let mut c = singular.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect())
            .unwrap_or_default()
    };
    match rest {
        [plural] => (kind(plural), None),
        [plural, name, sub @ ..] => {
            let object = match namespace {
                Some(ns) => format!("{ns}/{name}"),
                None => name.to_string(),
            };
            (
                kind(plural),
                Some(Target {
                    kind: kind(plural),
                    object,
                    subresource: sub.first().map(|s| s.to_string()),
                }),
            )
        }
        _ => (String::new(), None),
    }
}

/// The fields that differ between an object and what a write would make of
/// it, as `path: old -> new`, leaving out what every write changes
/// (resourceVersion, managedFields, generation).
pub fn diff(before: &Value, after: &Value) -> Vec<String> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        if matches!(
            path,
            "metadata.resourceVersion" | "metadata.managedFields" | "metadata.generation"
        ) {
            return;
        }
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(
                        &p,
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            // Lists of keyed entries (conditions, addresses) by their key,
            // so a change names the entry, not the whole list.
            (Value::Array(x), Value::Array(y)) if x != y => match (keyed(x), keyed(y)) {
                (Some(x), Some(y)) => {
                    let keys: std::collections::BTreeSet<&String> =
                        x.keys().chain(y.keys()).collect();
                    for k in keys {
                        let p = format!("{path}[{k}]");
                        walk(
                            &p,
                            x.get(k).copied().unwrap_or(&Value::Null),
                            y.get(k).copied().unwrap_or(&Value::Null),
                            out,
                        );
                    }
                }
                _ => out.push(format!("{path}: {} -> {}", short(a), short(b))),
            },
            (x, y) if x != y => out.push(format!("{path}: {} -> {}", short(x), short(y))),
            _ => {}
        }
    }
    /// Entries by `type` (and `address`, for Node addresses); `None` when an
    /// entry has no type or two share a key.
    fn keyed(list: &[Value]) -> Option<BTreeMap<String, &Value>> {
        let mut out = BTreeMap::new();
        for v in list {
            let kind = v.get("type")?.as_str()?;
            let key = match v.get("address").and_then(Value::as_str) {
                Some(address) => format!("{kind}={address}"),
                None => kind.to_string(),
            };
            if out.insert(key, v).is_some() {
                return None;
            }
        }
        Some(out)
    }
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    out
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 120 {
        format!("{}…", text.chars().take(117).collect::<String>())
    } else {
        text
    }
}

/// The client layer: writes become dry runs and divergences.
#[derive(Clone)]
pub struct ShadowLayer {
    /// A client without this layer, for the reads and dry runs.
    plain: kube::Client,
    report: Arc<Report>,
    controller: String,
}

impl ShadowLayer {
    pub fn new(plain: kube::Client, report: Arc<Report>, controller: &str) -> Self {
        Self {
            plain,
            report,
            controller: controller.to_string(),
        }
    }
}

impl<S> Layer<S> for ShadowLayer {
    type Service = Shadowed<S>;
    fn layer(&self, inner: S) -> Shadowed<S> {
        Shadowed {
            inner,
            layer: self.clone(),
        }
    }
}

pub struct Shadowed<S> {
    inner: S,
    layer: ShadowLayer,
}

impl std::fmt::Debug for ShadowLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowLayer")
            .field("controller", &self.controller)
            .finish_non_exhaustive()
    }
}

impl<S> std::fmt::Debug for Shadowed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadowed")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

type ShadowFuture<B> =
    Pin<Box<dyn Future<Output = Result<Response<Either<B, Full<Bytes>>>, BoxError>> + Send>>;

impl<S, B> Service<Request<Body>> for Shadowed<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = Response<Either<B, Full<Bytes>>>;
    type Error = BoxError;
    type Future = ShadowFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
            let sent = self.inner.call(req);
            return Box::pin(
                async move { sent.await.map(|r| r.map(Either::Left)).map_err(Into::into) },
            );
        }
        let layer = self.layer.clone();
        Box::pin(async move {
            let response = dry_run(&layer, req).await?;
            Ok(response.map(Either::Right))
        })
    }
}

/// Sends the write as a dry run, records what it would change, and answers
/// with the apiserver's dry-run answer.
async fn dry_run(
    layer: &ShadowLayer,
    req: Request<Body>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let (parts, body) = req.into_parts();
    let write = Write {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers.clone(),
        body: body.collect().await?.to_bytes(),
    };
    let (answer, bytes, outcome) = evaluate(&layer.plain, &write).await?;
    let (kind, target) = target(&write.path);
    if kind != "Event" {
        let action = match write.method {
            Method::PATCH => "patch",
            Method::PUT => "update",
            Method::DELETE => "delete",
            _ => "create",
        };
        let after: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let object = target
            .map(|t| match t.subresource {
                Some(sub) => format!("{} ({sub})", t.object),
                None => t.object,
            })
            .unwrap_or_else(|| {
                after["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            });
        let d = |changes| Divergence {
            controller: layer.controller.clone(),
            kind: kind.clone(),
            object: object.clone(),
            action: action.to_string(),
            changes,
            write: Some(write.clone()),
        };
        match outcome {
            Outcome::Changes(changes) => layer.report.record(d(changes)),
            Outcome::Gone if action != "create" => layer.report.apply(d(Vec::new()), true),
            Outcome::Unknown if !answer.status.is_success() => {
                // A dry run refused (an admission webhook without
                // sideEffects None refuses every one): reported, not hidden.
                let reason = format!(
                    "could not be checked: the apiserver answered the dry run with {}",
                    answer.status
                );
                layer.report.record(d(vec![reason]));
            }
            _ => {}
        }
    }
    Ok(Response::from_parts(answer, Full::new(bytes)))
}

/// A write as a dry run: the answer, and what it would change against the
/// object as stored (read from the object itself, not its subresource: the
/// controllers' RBAC may patch `nodes/status` without reading it).
async fn evaluate(
    plain: &kube::Client,
    write: &Write,
) -> Result<(http::response::Parts, Bytes, Outcome), BoxError> {
    let (_, target) = target(&write.path);
    let object_path = match target.as_ref().and_then(|t| t.subresource.as_ref()) {
        Some(sub) => write.path.trim_end_matches(&format!("/{sub}")).to_string(),
        None => write.path.clone(),
    };
    let before = match (&target, &write.method) {
        (Some(_), &Method::PATCH | &Method::PUT) => Some(read(plain, &object_path).await),
        _ => None,
    };
    let query = match &write.query {
        Some(q) => format!("{q}&dryRun=All"),
        None => "dryRun=All".to_string(),
    };
    let uri: http::Uri = format!("{}?{query}", write.path).parse()?;
    let mut dry = Request::builder().method(write.method.clone()).uri(uri);
    for (name, value) in &write.headers {
        dry = dry.header(name, value);
    }
    // A DELETE's options in its body win over the query's: they say dry run too.
    let body = match (&write.method, serde_json::from_slice::<Value>(&write.body)) {
        (&Method::DELETE, Ok(Value::Object(mut options))) => {
            options.insert("dryRun".into(), serde_json::json!(["All"]));
            serde_json::to_vec(&options)?
        }
        _ => write.body.to_vec(),
    };
    let answer = plain.send(dry.body(Body::from(body))?).await?;
    let (parts, answer_body) = answer.into_parts();
    let bytes = answer_body.collect().await?.to_bytes();
    let outcome = if parts.status == http::StatusCode::NOT_FOUND {
        Outcome::Gone
    } else if !parts.status.is_success() {
        Outcome::Unknown
    } else {
        let after: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match before {
            Some(Some(before)) => Outcome::Changes(diff(&before, &after)),
            Some(None) => Outcome::Unknown,
            None if write.method == Method::DELETE => Outcome::Changes(vec!["the object".into()]),
            None => Outcome::Changes(Vec::new()),
        }
    };
    Ok((parts, bytes, outcome))
}

async fn read(client: &kube::Client, path: &str) -> Option<Value> {
    let req = Request::get(path).body(Vec::new()).ok()?;
    let text = client.request_text(req).await.ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_name_the_kind_object_and_subresource() {
        let (kind, t) = target("/api/v1/nodes/n1/status");
        assert_eq!(kind, "Node");
        let t = t.unwrap();
        assert_eq!(
            (t.object.as_str(), t.subresource.as_deref()),
            ("n1", Some("status"))
        );
        let (kind, t) = target("/api/v1/namespaces/shop/services/web");
        assert_eq!(
            (kind.as_str(), t.unwrap().object.as_str()),
            ("Service", "shop/web")
        );
        assert_eq!(
            target("/api/v1/namespaces/shop/events"),
            ("Event".into(), None)
        );
        assert_eq!(
            target("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x").0,
            "Lease"
        );
    }

    #[test]
    fn a_diff_lists_changed_fields_and_not_what_every_write_changes() {
        let before = json!({"metadata": {"resourceVersion": "1", "labels": {"a": "1"}}, "spec": {"taints": [{"key": "t"}]}});
        let after = json!({"metadata": {"resourceVersion": "2", "labels": {"a": "1", "b": "2"}}, "spec": {}});
        assert_eq!(
            diff(&before, &after),
            [
                "metadata.labels.b: null -> \"2\"",
                "spec.taints: [{\"key\":\"t\"}] -> null"
            ]
        );
        assert!(diff(&before, &before).is_empty());
    }

    #[test]
    fn keyed_lists_are_compared_entry_by_entry() {
        let before = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastHeartbeatTime": "t1"},
            {"type": "NetworkUnavailable", "status": "True"}
        ], "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        let after = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastHeartbeatTime": "t1"},
            {"type": "NetworkUnavailable", "status": "False"}
        ], "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}});
        assert_eq!(
            diff(&before, &after),
            [
                "status.addresses[InternalIP=10.0.0.1]: {\"address\":\"10.0.0.1\",\"type\":\"InternalIP\"} -> null",
                "status.addresses[InternalIP=10.0.0.2]: null -> {\"address\":\"10.0.0.2\",\"type\":\"InternalIP\"}",
                "status.conditions[NetworkUnavailable].status: \"True\" -> \"False\"",
            ]
        );
    }

    #[test]
    fn a_write_that_changes_nothing_clears_the_divergence() {
        let report = Report::new(None, divergences_gauge("acme"));
        let d = |changes: Vec<String>| Divergence {
            controller: "service-controller".into(),
            kind: "Service".into(),
            object: "shop/web (status)".into(),
            action: "patch".into(),
            changes,
            write: None,
        };
        report.record(d(vec!["status.loadBalancer: ...".into()]));
        assert_eq!(report.divergences().len(), 1);
        assert_eq!(
            report
                .gauge
                .with_label_values(&["service-controller", "Service"])
                .get(),
            1
        );
        report.record(d(Vec::new()));
        assert!(report.divergences().is_empty());
    }
}
