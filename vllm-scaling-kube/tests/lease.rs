//! Leader election against the in-process API server: one leader at a time, take-over
//! after expiry, release on shutdown, races lost cleanly, stepping down after the renew
//! deadline.

use std::sync::Arc;
use std::time::Duration;

use vllm_scaling_core::{FakeClock, Timestamp};
use vllm_scaling_kube::fake_api::{FakeApiServer, Fault};
use vllm_scaling_kube::{LeaderElector, Leadership, LeaseConfig};

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/vllm-system/leases/vllm-autoscaler";

fn elector(server: &FakeApiServer, clock: &FakeClock, identity: &str) -> (LeaderElector, Leadership) {
    let leadership = Leadership::candidate();
    let config = LeaseConfig::new("vllm-autoscaler", "vllm-system", identity);
    (LeaderElector::new(server.client(), config, Arc::new(clock.clone()), leadership.clone()), leadership)
}

fn holder(server: &FakeApiServer) -> serde_json::Value {
    server.get("coordination.k8s.io/v1", "Lease", "vllm-system", "vllm-autoscaler").unwrap()["spec"].clone()
}

#[tokio::test]
async fn one_leader_then_take_over_after_expiry_then_release() {
    let server = FakeApiServer::start().await.unwrap();
    let clock = FakeClock::new(Timestamp::from_millis(1_700_000_000_000));
    let (mut a, a_leads) = elector(&server, &clock, "controller-a");
    let (mut b, b_leads) = elector(&server, &clock, "controller-b");

    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    assert!(a_leads.is_leader() && !b_leads.is_leader());
    let spec = holder(&server);
    assert_eq!(spec["holderIdentity"], "controller-a");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(spec["leaseTransitions"], 0);

    // A renews; B still waits.
    clock.advance(Duration::from_secs(5));
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    assert!(holder(&server)["renewTime"].as_str().unwrap().starts_with("2023-11-14T22:13:25"));

    // A stops renewing (hung, partitioned): 15 s after its last renewal B takes over.
    clock.advance(Duration::from_secs(14));
    assert!(!b.try_acquire_or_renew().await.unwrap(), "14 s: still A's");
    clock.advance(Duration::from_secs(1));
    assert!(b.try_acquire_or_renew().await.unwrap(), "15 s: expired");
    assert_eq!(holder(&server)["holderIdentity"], "controller-b");
    assert_eq!(holder(&server)["leaseTransitions"], 1);
    // A comes back, sees B's valid lease, and steps down.
    assert!(!a.try_acquire_or_renew().await.unwrap());
    assert!(!a_leads.is_leader() && b_leads.is_leader());

    // B shuts down and releases: A takes over at once.
    b.release().await.unwrap();
    assert!(!b_leads.is_leader());
    assert_eq!(holder(&server)["holderIdentity"], serde_json::Value::Null);
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert_eq!(holder(&server)["holderIdentity"], "controller-a");
}

#[tokio::test]
async fn a_lost_race_is_not_an_error() {
    let server = FakeApiServer::start().await.unwrap();
    let clock = FakeClock::new(Timestamp::from_millis(1_700_000_000_000));
    let (mut a, _) = elector(&server, &clock, "controller-a");
    let (mut b, b_leads) = elector(&server, &clock, "controller-b");
    assert!(a.try_acquire_or_renew().await.unwrap());
    clock.advance(Duration::from_secs(20));
    // B read the expired lease, but A renewed first: B's write carries a stale version.
    server.inject(Fault::status(409).on("PUT", LEASE_PATH));
    assert!(!b.try_acquire_or_renew().await.unwrap());
    assert!(!b_leads.is_leader());
    let put = server.requests_to("PUT", LEASE_PATH);
    assert_eq!(put.len(), 1);
    assert!(put[0].body.as_ref().unwrap()["metadata"]["resourceVersion"].is_string(), "writes are conditional");
}

#[tokio::test]
async fn the_leader_steps_down_after_the_renew_deadline() {
    let server = FakeApiServer::start().await.unwrap();
    let clock = FakeClock::new(Timestamp::from_millis(1_700_000_000_000));
    let (mut a, a_leads) = elector(&server, &clock, "controller-a");
    assert!(a.try_acquire_or_renew().await.unwrap());
    server.inject(Fault::status(500).on("GET", LEASE_PATH).times(usize::MAX));
    clock.advance(Duration::from_secs(5));
    assert!(a.try_acquire_or_renew().await.is_err());
    assert!(a_leads.is_leader(), "a transient error inside the renew deadline keeps the lead");
    clock.advance(Duration::from_secs(5));
    assert!(a.try_acquire_or_renew().await.is_err());
    assert!(!a_leads.is_leader(), "10 s without a renewal: step down before the lease can expire");
}
