//! Kubernetes `coordination.k8s.io/v1` Lease elector with client-go semantics.
//!
//! Every write is conditional on the `resourceVersion` that was read (POST to create, PUT with
//! `metadata.resourceVersion` to acquire, renew or release), so two candidates that both see an
//! expired lease cannot both win: the apiserver answers the loser with 409 Conflict. Expiry is
//! judged, as in client-go, from when *this* candidate last saw the record change (local
//! observed time), not from the `renewTime` another host wrote, so clock skew between hosts does
//! not matter. kube and k8s-openapi types stay inside this module.

use super::{Clock, ElectionError, ElectionTiming, LeaderElector};
use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// A Lease API call failed for a reason other than losing a race.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The apiserver answered with an error status.
    #[error("lease {lease}: apiserver answered {code} {reason}: {message}")]
    Api {
        /// Lease name.
        lease: String,
        /// HTTP status.
        code: u16,
        /// Kubernetes reason, e.g. `Forbidden`.
        reason: String,
        /// The apiserver's message.
        message: String,
    },
    /// The request did not get an answer (connection, TLS, decoding).
    #[error("lease {lease}: {message}")]
    Transport {
        /// Lease name.
        lease: String,
        /// What went wrong.
        message: String,
    },
    /// The clock cannot be represented as a Kubernetes timestamp.
    #[error("clock out of range: {0}")]
    Clock(String),
}

/// The fields of a Lease that decide leadership; a change in any of them resets observed time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    duration_secs: i32,
    acquire_time: Option<String>,
    renew_time: Option<String>,
    transitions: i32,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Self {
        Self {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            duration_secs: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0.to_string()),
            renew_time: spec.renew_time.as_ref().map(|t| t.0.to_string()),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

#[derive(Debug, Default)]
struct Observed {
    record: Option<Record>,
    at: Option<SystemTime>,
}

/// Leader election through one Lease object.
pub struct LeaseElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: ElectionTiming,
    clock: Arc<dyn Clock>,
    observed: Mutex<Observed>,
}

impl LeaseElector {
    /// An elector for Lease `namespace/name`, competing as `identity`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: impl Into<String>,
        identity: impl Into<String>,
        timing: ElectionTiming,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            timing,
            clock,
            observed: Mutex::new(Observed::default()),
        }
    }

    /// A kube client from the in-cluster (or kubeconfig) environment.
    pub async fn default_client() -> Result<kube::Client, LeaseError> {
        kube::Client::try_default()
            .await
            .map_err(|e| LeaseError::Transport {
                lease: String::new(),
                message: e.to_string(),
            })
    }

    fn err(&self, e: kube::Error) -> LeaseError {
        match e {
            kube::Error::Api(status) => LeaseError::Api {
                lease: self.name.clone(),
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            },
            other => LeaseError::Transport {
                lease: self.name.clone(),
                message: other.to_string(),
            },
        }
    }

    fn micro(&self, t: SystemTime) -> Result<MicroTime, LeaseError> {
        k8s_openapi::jiff::Timestamp::try_from(t)
            .map(MicroTime)
            .map_err(|e| LeaseError::Clock(e.to_string()))
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.timing.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    fn observe(&self, record: Record, now: SystemTime) -> SystemTime {
        let mut o = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        if o.record.as_ref() != Some(&record) || o.at.is_none() {
            o.record = Some(record);
            o.at = Some(now);
        }
        o.at.unwrap_or(now)
    }

    fn remember(&self, spec: &LeaseSpec, now: SystemTime) {
        let mut o = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        o.record = Some(Record::of(spec));
        o.at = Some(now);
    }

    async fn create(&self, now: SystemTime) -> Result<bool, LeaseError> {
        let t = self.micro(now)?;
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration_secs()),
            acquire_time: Some(t.clone()),
            renew_time: Some(t),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        };
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec.clone()),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => {
                self.remember(&spec, now);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// PUT carrying the read `resourceVersion`; 409 means someone else wrote first.
    async fn replace(&self, lease: &Lease, now: SystemTime) -> Result<bool, LeaseError> {
        match self
            .api
            .replace(&self.name, &PostParams::default(), lease)
            .await
        {
            Ok(written) => {
                if let Some(spec) = written.spec.as_ref() {
                    self.remember(spec, now);
                }
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn attempt(&self) -> Result<bool, LeaseError> {
        let now = self.clock.now();
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(e))?
        else {
            return self.create(now).await;
        };
        let old = lease.spec.clone().unwrap_or_default();
        let record = Record::of(&old);
        let observed_at = self.observe(record.clone(), now);
        let ours = record.holder.as_deref() == Some(self.identity.as_str());
        let lease_len =
            Duration::from_secs(u64::try_from(record.duration_secs.max(0)).unwrap_or(0));
        let live = observed_at + lease_len > now;
        if record.holder.is_some() && !ours && live {
            return Ok(false);
        }
        let t = self.micro(now)?;
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration_secs()),
            acquire_time: if ours {
                old.acquire_time.clone().or_else(|| Some(t.clone()))
            } else {
                Some(t.clone())
            },
            renew_time: Some(t),
            lease_transitions: Some(if ours {
                record.transitions
            } else {
                record.transitions.saturating_add(1)
            }),
            ..old
        };
        // metadata (and with it resourceVersion) is kept exactly as read: the write is conditional.
        lease.spec = Some(spec);
        self.replace(&lease, now).await
    }

    async fn give_up(&self) -> Result<(), LeaseError> {
        let now = self.clock.now();
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(());
        };
        let old = lease.spec.clone().unwrap_or_default();
        if old.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let t = self.micro(now)?;
        // client-go's release: empty holder, 1 s duration, transitions unchanged.
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(t.clone()),
            renew_time: Some(t),
            ..old
        });
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            // Someone else already wrote: nothing of ours left to release.
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }
}

#[async_trait]
impl LeaderElector for LeaseElector {
    async fn try_acquire_or_renew(&self) -> Result<bool, ElectionError> {
        Ok(self.attempt().await?)
    }

    async fn release(&self) -> Result<(), ElectionError> {
        Ok(self.give_up().await?)
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    fn timing(&self) -> ElectionTiming {
        self.timing
    }

    fn backend(&self) -> &'static str {
        "kubernetes"
    }
}
