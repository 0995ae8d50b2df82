//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas of the
//! controller run safely: only the holder of the lease acts.
//!
//! The algorithm is client-go's `leaderelection` (the one kube-controller-manager uses):
//! a candidate takes the lease when it does not exist or its holder has not renewed it
//! for `lease_duration`; the holder renews every `retry_period` and steps down when it
//! could not renew for `renew_deadline`. Writes carry the lease's `resourceVersion`, so
//! two candidates racing for an expired lease cannot both win (one gets 409 Conflict).
//! The decision is [`decide`], a pure function; [`LeaderElector`] does the I/O.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use vllm_scaling_core::{Clock, Timestamp};

use crate::error::Error;

/// Leader-election settings (client-go's defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's identity (the pod name, usually).
    pub identity: String,
    /// How long a lease stays valid without renewal (15 s).
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before stepping down (10 s).
    pub renew_deadline: Duration,
    /// How often candidates try and the holder renews (2 s).
    pub retry_period: Duration,
    /// How long releasing the lease at shutdown may take (2 s): it is best effort, since
    /// an unreleased lease expires on its own after `lease_duration`.
    pub release_timeout: Duration,
}

impl LeaseConfig {
    /// Settings with client-go's timing defaults.
    #[must_use]
    pub fn new(name: impl Into<String>, namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            release_timeout: Duration::from_secs(2),
        }
    }
}

/// What a candidate should do with the lease it read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseAction {
    /// There is no lease: create it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Its holder let it expire (or released it): take it over.
    TakeOver,
    /// Someone else holds a valid lease until the given time.
    Wait {
        /// The holder.
        holder: String,
        /// When the lease expires unless renewed.
        expires: Timestamp,
    },
}

fn to_ts(t: &MicroTime) -> Timestamp {
    Timestamp::from_millis(u64::try_from(t.0.as_millisecond()).unwrap_or(0))
}

fn micro(now: Timestamp) -> MicroTime {
    let ms = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
    MicroTime(k8s_openapi::jiff::Timestamp::from_millisecond(ms).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
}

/// What `identity` should do at `now` given the lease as read (`None`: it does not exist).
#[must_use]
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp, default_duration: Duration) -> LeaseAction {
    let Some(spec) = lease else { return LeaseAction::Create };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return LeaseAction::Renew;
    }
    if holder.is_empty() {
        return LeaseAction::TakeOver;
    }
    let duration =
        spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok()).map_or(default_duration, Duration::from_secs);
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map_or(Timestamp::ZERO, to_ts);
    let expires = renewed.saturating_add(duration);
    if now >= expires { LeaseAction::TakeOver } else { LeaseAction::Wait { holder, expires } }
}

/// Whether this replica leads; shared between the elector and the controller.
#[derive(Clone, Debug)]
pub struct Leadership {
    flag: Arc<AtomicBool>,
}

impl Leadership {
    /// Always the leader (leader election off).
    #[must_use]
    pub fn always() -> Self {
        Self { flag: Arc::new(AtomicBool::new(true)) }
    }

    /// Not the leader until an elector says so.
    #[must_use]
    pub fn candidate() -> Self {
        Self { flag: Arc::new(AtomicBool::new(false)) }
    }

    /// Whether this replica may act now.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    fn set(&self, leader: bool) -> bool {
        self.flag.swap(leader, Ordering::SeqCst)
    }
}

/// Runs leader election for one replica.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    clock: Arc<dyn Clock>,
    leadership: Leadership,
    last_renew: Option<Timestamp>,
    on_change: Option<Box<dyn Fn(bool) + Send + Sync>>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector").field("config", &self.config).finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// An elector that flips `leadership`.
    #[must_use]
    pub fn new(client: kube::Client, config: LeaseConfig, clock: Arc<dyn Clock>, leadership: Leadership) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Self { api, config, clock, leadership, last_renew: None, on_change: None }
    }

    /// Calls `f(is_leader)` whenever leadership changes (builder style).
    #[must_use]
    pub fn on_change(mut self, f: impl Fn(bool) + Send + Sync + 'static) -> Self {
        self.on_change = Some(Box::new(f));
        self
    }

    fn set_leader(&self, leader: bool) {
        self.flip(leader, false);
    }

    /// Leaves the leadership on purpose (shutdown): said at INFO, since nothing was lost.
    fn step_down(&self) {
        self.flip(false, true);
    }

    fn flip(&self, leader: bool, voluntary: bool) {
        let was = self.leadership.set(leader);
        if was != leader {
            let (identity, lease) = (&self.config.identity, &self.config.name);
            if leader {
                tracing::info!(%identity, %lease, "became the leader");
            } else if voluntary {
                tracing::info!(%identity, %lease, "stepped down from the leadership to shut down");
            } else {
                tracing::warn!(%identity, %lease, "lost the leadership");
            }
            if let Some(f) = &self.on_change {
                f(leader);
            }
        }
    }

    /// One election round: read the lease and create, renew or take it over when allowed.
    /// Returns whether this replica leads afterwards.
    ///
    /// # Errors
    /// When the API server cannot be reached or answers unexpectedly; a holder that keeps
    /// failing steps down once `renew_deadline` has passed since its last renewal.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let now = self.clock.now();
        let result = self.round(now).await;
        match &result {
            Ok(true) => {
                self.last_renew = Some(now);
                self.set_leader(true);
            }
            Ok(false) => {
                self.last_renew = None;
                self.set_leader(false);
            }
            Err(_) => {
                // client-go: keep leading through transient errors until the renew deadline.
                let deadline_passed =
                    self.last_renew.is_none_or(|t| now.saturating_duration_since(t) >= self.config.renew_deadline);
                if deadline_passed {
                    self.set_leader(false);
                }
            }
        }
        result
    }

    async fn round(&self, now: Timestamp) -> Result<bool, Error> {
        let name = &self.config.name;
        let existing = self.api.get_opt(name).await.map_err(|source| Error::Lease { step: "read", source })?;
        let spec = existing.as_ref().and_then(|l| l.spec.as_ref());
        let action = decide(spec, &self.config.identity, now, self.config.lease_duration);
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        match action {
            LeaseAction::Wait { .. } => Ok(false),
            LeaseAction::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(duration_secs),
                        acquire_time: Some(micro(now)),
                        renew_time: Some(micro(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(source) => Err(Error::Lease { step: "create", source }),
                }
            }
            LeaseAction::Renew | LeaseAction::TakeOver => {
                let Some(mut lease) = existing else { return Ok(false) };
                let mut spec = lease.spec.take().unwrap_or_default();
                if action == LeaseAction::TakeOver {
                    spec.holder_identity = Some(self.config.identity.clone());
                    spec.acquire_time = Some(micro(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
                }
                spec.renew_time = Some(micro(now));
                spec.lease_duration_seconds = Some(duration_secs);
                lease.spec = Some(spec);
                // The read resourceVersion stays in the body: a racing writer gets 409.
                match self.api.replace(name, &PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(source) => Err(Error::Lease { step: "update", source }),
                }
            }
        }
    }

    /// Gives the lease up (holder cleared, duration 1 s) if this replica holds it, so a
    /// standby takes over at once instead of waiting for expiry.
    ///
    /// # Errors
    /// When the lease cannot be read or written.
    pub async fn release(&mut self) -> Result<(), Error> {
        if !self.leadership.is_leader() {
            return Ok(());
        }
        self.step_down();
        let Some(mut lease) =
            self.api.get_opt(&self.config.name).await.map_err(|source| Error::Lease { step: "read", source })?
        else {
            return Ok(());
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(micro(self.clock.now()));
        lease.spec = Some(spec);
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .map_err(|source| Error::Lease { step: "release", source })?;
        Ok(())
    }

    /// Runs election rounds every `retry_period` until `shutdown` resolves (a round in
    /// flight is abandoned), then releases the lease, best effort, within
    /// `release_timeout`.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            // A round stuck on an unreachable API server must not hold up the shutdown.
            tokio::select! {
                () = &mut shutdown => break,
                round = self.try_acquire_or_renew() => {
                    if let Err(e) = round {
                        tracing::warn!(error = %vllm_scaling_core::error_chain(&e), "leader election round failed");
                    }
                }
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
        let timeout = self.config.release_timeout;
        match tokio::time::timeout(timeout, self.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %vllm_scaling_core::error_chain(&e), "releasing the lease failed"),
            Err(_) => {
                // release() stepped down before its first request: only the lease object
                // is left, and it expires on its own.
                self.step_down();
                tracing::warn!(?timeout, "releasing the lease timed out; it expires on its own");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_secs: u64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            renew_time: Some(micro(Timestamp::from_secs(renewed_secs))),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions_follow_client_go() {
        let d = Duration::from_secs(15);
        let now = Timestamp::from_secs(1000);
        assert_eq!(decide(None, "a", now, d), LeaseAction::Create);
        assert_eq!(decide(Some(&spec("a", 990, 15)), "a", now, d), LeaseAction::Renew);
        assert_eq!(
            decide(Some(&spec("b", 990, 15)), "a", now, d),
            LeaseAction::Wait { holder: "b".into(), expires: Timestamp::from_secs(1005) }
        );
        assert_eq!(decide(Some(&spec("b", 985, 15)), "a", now, d), LeaseAction::TakeOver);
        assert_eq!(decide(Some(&spec("", 999, 15)), "a", now, d), LeaseAction::TakeOver);
    }
}
