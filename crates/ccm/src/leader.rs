//! Leader election on a coordination.k8s.io Lease with client-go's semantics,
//! so overcast-ccm and a Go cloud-controller-manager hand over to each other
//! safely: a Lease held by someone else is respected until it has gone
//! unrenewed for its leaseDurationSeconds *as observed by this process's own
//! clock* (so clock skew between hosts does not matter).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use std::sync::LazyLock;

pub(crate) static MASTER_STATUS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
        "leader_election_master_status",
        "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name.",
        ),
        &["name"]
    )
    .expect("a valid metric")
});

pub(crate) static SLOWPATH: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
        "leader_election_slowpath_total",
        "Total number of slow path exercised in renewing leader leases. 'name' is the string used to identify the lease. Please make sure to group by name.",
        ),
        &["name"]
    )
    .expect("a valid metric")
});

/// client-go's leader election timings.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// What the health checks read.
#[derive(Debug)]
pub struct ElectionState {
    pub name: String,
    /// The health check's name: leaderElection or leaderMigration.
    pub check_name: String,
    leading: AtomicBool,
    last_renew: Mutex<Option<Instant>>,
    lease_duration: Duration,
}

/// How long past a missed renewal the leaderElection health check still
/// passes (client-go's HealthzAdaptor timeout in the controller managers).
const HEALTH_TOLERANCE: Duration = Duration::from_secs(20);

impl ElectionState {
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Fails when this process leads but has not renewed for longer than the
    /// lease duration plus a tolerance: it is stuck and should be restarted.
    pub fn check(&self) -> Result<(), String> {
        if !self.is_leading() {
            return Ok(());
        }
        let last = *self.last_renew.lock().unwrap_or_else(|p| p.into_inner());
        match last {
            Some(t) if t.elapsed() > self.lease_duration + HEALTH_TOLERANCE => Err(format!(
                "failed election to renew leadership on lease {}",
                self.name
            )),
            _ => Ok(()),
        }
    }
}

/// The fields of a Lease that make up the leader record.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    holder: String,
    lease_duration_seconds: i32,
    acquire_time: Option<MicroTime>,
    renew_time: Option<MicroTime>,
    transitions: i32,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or_default(),
            acquire_time: spec.acquire_time,
            renew_time: spec.renew_time,
            transitions: spec.lease_transitions.unwrap_or_default(),
        }
    }
}

#[derive(Debug)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
    state: Arc<ElectionState>,
    observed: Mutex<Option<(Record, Instant)>>,
}

impl LeaseLock {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timings: Timings,
        check_name: &str,
    ) -> Self {
        MASTER_STATUS.with_label_values(&[name]).set(0);
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timings,
            state: Arc::new(ElectionState {
                name: name.to_string(),
                check_name: check_name.to_string(),
                leading: AtomicBool::new(false),
                last_renew: Mutex::new(None),
                lease_duration: timings.lease_duration,
            }),
            observed: Mutex::new(None),
        }
    }

    /// client-go bounds each lock request by half the renew deadline.
    fn request_timeout(&self) -> Duration {
        (self.timings.renew_deadline / 2).max(Duration::from_secs(1))
    }

    pub fn state(&self) -> Arc<ElectionState> {
        Arc::clone(&self.state)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns once this process holds the Lease.
    pub async fn acquire(&self) {
        tracing::info!(lease = %self.name, identity = %self.identity, "attempting to acquire leader lease");
        loop {
            let attempt = tokio::time::timeout(self.request_timeout(), self.try_acquire_or_renew());
            match attempt.await.unwrap_or(Ok(false)) {
                Ok(true) => {
                    self.set_leading(true);
                    tracing::info!(lease = %self.name, "successfully acquired lease");
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "error retrieving resource lock")
                }
            }
            // client-go's JitterUntil with factor 1.2.
            let jitter =
                1.0 + JITTER_FACTOR * overcast_controllers::events::pseudo_random_fraction();
            tokio::time::sleep(self.timings.retry_period.mul_f64(jitter)).await;
        }
    }

    /// Renews every retry period; returns when the Lease could not be renewed
    /// within the renew deadline (leadership is lost).
    pub async fn hold(&self) {
        loop {
            tokio::time::sleep(self.timings.retry_period).await;
            let deadline = Instant::now() + self.timings.renew_deadline;
            let mut first = true;
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    self.set_leading(false);
                    tracing::error!(lease = %self.name, "failed to renew lease: timed out");
                    return;
                }
                if !first {
                    SLOWPATH.with_label_values(&[&self.name]).inc();
                }
                first = false;
                match tokio::time::timeout(remaining, self.try_acquire_or_renew()).await {
                    Ok(Ok(true)) => break,
                    Ok(Ok(false)) => {
                        // Someone else holds it now.
                        self.set_leading(false);
                        tracing::error!(lease = %self.name, "lease is held by another identity");
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(lease = %self.name, error = %e, "failed to renew lease")
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(self.timings.retry_period.min(remaining)).await;
            }
        }
    }

    /// Gives the Lease up at once (client-go's ReleaseOnCancel): holder
    /// emptied and a one-second duration, so a standby takes over without
    /// waiting for expiry.
    pub async fn release(&self) {
        if !self.state.is_leading() {
            return;
        }
        let read = tokio::time::timeout(self.request_timeout(), self.api.get_opt(&self.name));
        let Ok(Ok(Some(mut lease))) = read.await else {
            return;
        };
        if Record::of(&lease).holder != self.identity {
            return;
        }
        let now = MicroTime(Timestamp::now());
        let transitions = Record::of(&lease).transitions;
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        });
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.name, "released lease"),
            Err(e) => tracing::warn!(lease = %self.name, error = %e, "failed to release lease"),
        }
        self.set_leading(false);
    }

    fn set_leading(&self, leading: bool) {
        self.state.leading.store(leading, Ordering::SeqCst);
        MASTER_STATUS
            .with_label_values(&[&self.name])
            .set(i64::from(leading));
    }

    /// client-go's tryAcquireOrRenew.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration_secs =
            i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(Record::of(&created));
                    self.renewed();
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
                Err(e) => Err(e),
            };
        };
        let record = Record::of(&lease);
        let observed_at = self.observe(record.clone());
        let mine = record.holder == self.identity;
        if !record.holder.is_empty() && !mine {
            let valid_for = match record.lease_duration_seconds {
                d if d > 0 => Duration::from_secs(d as u64),
                _ => self.timings.lease_duration,
            };
            if observed_at + valid_for > Instant::now() {
                return Ok(false);
            }
        }
        let (acquire_time, transitions) = if mine {
            (record.acquire_time.clone(), record.transitions)
        } else {
            (Some(now.clone()), record.transitions + 1)
        };
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(duration_secs),
            acquire_time,
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..lease.spec.clone().unwrap_or_default()
        });
        // The update carries the resourceVersion read above: if anyone wrote
        // the Lease meanwhile, this fails with a conflict and nobody is fooled.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observe(Record::of(&updated));
                self.renewed();
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Remembers the record and when it was first seen in this form.
    fn observe(&self, record: Record) -> Instant {
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        match observed.as_ref() {
            Some((r, at)) if *r == record => *at,
            _ => {
                let at = Instant::now();
                *observed = Some((record, at));
                at
            }
        }
    }

    fn renewed(&self) {
        *self
            .state
            .last_renew
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }
}

/// client-go's leaderelection.JitterFactor: a retry waits the retry period
/// plus up to this many more of it.
pub const JITTER_FACTOR: f64 = 1.2;

/// `hostname_<random UUID>`, as upstream's controller managers identify themselves.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "overcast-ccm".to_string());
    format!("{host}_{}", uuid_v4())
}

fn uuid_v4() -> String {
    use std::io::Read as _;
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (nanos ^ u128::from(std::process::id())).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_host_underscore_uuid() {
        let id = identity();
        let (_, uuid) = id.rsplit_once('_').unwrap();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert_ne!(identity(), id);
    }
}
