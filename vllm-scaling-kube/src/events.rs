//! Publishing `events.k8s.io/v1` Events on a policy, folding repeats the way client-go's
//! event correlator does: an event with the same type, reason, action, object **and note**
//! as one published in the last six minutes becomes that event's series (`count`,
//! `lastObservedTime`); an event whose note differs is a fresh Event.
//!
//! kube-runtime's `Recorder` leaves the note out of its key, so every later rescale
//! ("New size: 1; reason: scale down 6 -> 1 ...") would be folded into the first one's
//! series and its note lost; `kubectl describe` must show what happened last. (The API
//! server also refuses to change an Event's `note` on update, so the note cannot be
//! refreshed in the series instead.)

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use serde_json::json;

/// How long a published event can still take repeats into its series (kube-runtime's and
/// client-go's six minutes).
const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

/// What makes two events the same: everything but the time. The note is kept as a hash so
/// the cache stays small with thousands of policies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct EventKey {
    namespace: String,
    name: String,
    uid: Option<String>,
    warning: bool,
    reason: String,
    action: String,
    note_hash: u64,
}

#[derive(Clone, Debug)]
struct Published {
    event_name: String,
    count: i32,
    last: Timestamp,
}

/// Publishes events for one reporting controller instance.
pub(crate) struct EventPublisher {
    client: kube::Client,
    controller: String,
    instance: String,
    cache: Mutex<HashMap<EventKey, Published>>,
    last_gc: Mutex<Option<Timestamp>>,
    sequence: AtomicU64,
}

impl EventPublisher {
    pub(crate) fn new(client: kube::Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: instance.to_owned(),
            cache: Mutex::new(HashMap::new()),
            last_gc: Mutex::new(None),
            sequence: AtomicU64::new(0),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<EventKey, Published>> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops entries whose series can no longer grow, at most once a minute (not on every
    /// publish: with thousands of policies a sweep per event would be quadratic).
    fn collect_garbage(&self, now: Timestamp) {
        let mut last = self.last_gc.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| now.duration_since(at).unsigned_abs() < Duration::from_secs(60)) {
            return;
        }
        *last = Some(now);
        drop(last);
        self.cache().retain(|_, p| now.duration_since(p.last).unsigned_abs() < SERIES_TTL);
    }

    /// Publishes `event` about `regarding`: a new Event, or the next count of the series of
    /// an identical one.
    pub(crate) async fn publish(&self, event: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        self.collect_garbage(now);
        let note = event.note.clone().unwrap_or_default();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        note.hash(&mut hasher);
        let key = EventKey {
            namespace: regarding.namespace.clone().unwrap_or_else(|| "default".to_owned()),
            name: regarding.name.clone().unwrap_or_default(),
            uid: regarding.uid.clone(),
            warning: matches!(event.type_, EventType::Warning),
            reason: event.reason.clone(),
            action: event.action.clone(),
            note_hash: hasher.finish(),
        };
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &key.namespace);
        let previous =
            self.cache().get(&key).cloned().filter(|p| now.duration_since(p.last).unsigned_abs() < SERIES_TTL);
        let published = match previous {
            Some(p) => {
                let count = p.count + 1;
                let series = EventSeries { count, last_observed_time: MicroTime(now) };
                api.patch(&p.event_name, &PatchParams::default(), &Patch::Merge(&json!({ "series": series }))).await?;
                Published { event_name: p.event_name, count, last: now }
            }
            None => {
                let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
                let event_name = format!(
                    "{}.{:x}{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond(),
                    sequence
                );
                let body = K8sEvent {
                    action: Some(event.action.clone()),
                    reason: Some(event.reason.clone()),
                    event_time: Some(MicroTime(now)),
                    regarding: Some(regarding.clone()),
                    note: event.note.clone(),
                    metadata: ObjectMeta {
                        namespace: Some(key.namespace.clone()),
                        name: Some(event_name.clone()),
                        ..ObjectMeta::default()
                    },
                    reporting_controller: Some(self.controller.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    type_: Some(if key.warning { "Warning" } else { "Normal" }.to_owned()),
                    related: event.secondary.clone(),
                    ..K8sEvent::default()
                };
                api.create(&PostParams::default(), &body).await?;
                Published { event_name, count: 1, last: now }
            }
        };
        self.cache().insert(key, published);
        Ok(())
    }
}
