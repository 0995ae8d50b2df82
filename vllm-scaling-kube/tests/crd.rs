//! The CRD: committed copies do not drift from the types, the schema is structural (the
//! rules a real API server enforces), and it accepts the seed's example verbatim while
//! rejecting what it can type.

use std::path::PathBuf;

use serde_json::{Value, json};
use vllm_scaling_kube::{VllmScalingPolicyResource, admission, crd, crd_yaml};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Compares a committed file with what the code generates; `VLLM_SCALING_BLESS=1`
/// rewrites it instead.
fn check_committed(path: &str, expected: &str) {
    let file = repo(path);
    if std::env::var("VLLM_SCALING_BLESS").as_deref() == Ok("1") {
        std::fs::write(&file, expected).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    assert!(
        committed == expected,
        "{path} drifted from the types: regenerate it with `vllm-autoscaler crd > {path}` \
         (or VLLM_SCALING_BLESS=1 cargo test -p vllm-scaling-kube --test crd) and commit it"
    );
}

#[test]
fn committed_crds_match_the_types() {
    let yaml = crd_yaml().unwrap();
    check_committed("deploy/crd.yaml", &yaml);
    check_committed("deploy/helm/vllm-autoscaler/crds/vllmscalingpolicy.yaml", &yaml);
}

#[test]
fn names_scope_columns_and_subresources() {
    let crd = serde_json::to_value(crd()).unwrap();
    assert_eq!(crd["spec"]["group"], "autoscaler.production-stack");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(
        crd["spec"]["names"],
        json!({"kind": "vLLMScalingPolicy", "plural": "vllmscalingpolicies", "singular": "vllmscalingpolicy", "shortNames": ["vsp"], "categories": ["autoscaling"]})
    );
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["served"], true);
    assert_eq!(version["storage"], true);
    assert_eq!(version["subresources"], json!({"status": {}}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c.get("priority").is_none())
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["Target", "Min", "Max", "Replicas", "Desired", "Ready", "Active", "Winning Rule", "Mode", "Age"]
    );
    // READY and ACTIVE read the conditions the controller writes.
    let path = |name: &str| {
        version["additionalPrinterColumns"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()["jsonPath"]
            .clone()
    };
    assert_eq!(path("Ready"), ".status.conditions[?(@.type==\"Ready\")].status");
    assert_eq!(path("Active"), ".status.conditions[?(@.type==\"ScalingActive\")].status");
}

/// The structural-schema rules of `apiextensions.k8s.io/v1` (the ones kube's derive can get
/// wrong): every node typed unless it preserves unknown fields, no `$ref`, no
/// `additionalProperties` beside `properties`, nothing typed inside `anyOf`/`oneOf`/`allOf`.
fn check_structural(node: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(map) = node.as_object() else {
        problems.push(format!("{path}: not an object"));
        return;
    };
    let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    let int_or_string = map.get("x-kubernetes-int-or-string") == Some(&json!(true));
    if !map.contains_key("type") && !preserve && !int_or_string {
        problems.push(format!("{path}: no type"));
    }
    for bad in ["$ref", "definitions", "$schema", "$defs", "title"] {
        if map.contains_key(bad) && !(bad == "title" && path.is_empty()) {
            problems.push(format!("{path}: has {bad}"));
        }
    }
    if map.contains_key("properties") && map.contains_key("additionalProperties") {
        problems.push(format!("{path}: properties and additionalProperties together"));
    }
    for junctor in ["anyOf", "oneOf", "allOf", "not"] {
        if let Some(branches) = map.get(junctor) {
            for (i, b) in branches.as_array().into_iter().flatten().enumerate() {
                for forbidden in ["type", "description", "default", "additionalProperties", "nullable"] {
                    if b.get(forbidden).is_some() {
                        problems.push(format!("{path}.{junctor}[{i}]: sets {forbidden}"));
                    }
                }
            }
        }
    }
    match map.get("type").and_then(Value::as_str) {
        Some("array") => match map.get("items") {
            Some(items) => check_structural(items, &format!("{path}[]"), problems),
            None => problems.push(format!("{path}: array without items")),
        },
        Some("object") => {
            for (k, v) in map.get("properties").and_then(Value::as_object).into_iter().flatten() {
                check_structural(v, &format!("{path}.{k}"), problems);
            }
            if let Some(ap) = map.get("additionalProperties").filter(|v| v.is_object()) {
                check_structural(ap, &format!("{path}{{*}}"), problems);
            }
        }
        Some(_) if map.contains_key("properties") => problems.push(format!("{path}: properties on a non-object")),
        _ => {}
    }
}

fn schema() -> Value {
    serde_json::to_value(crd()).unwrap()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn the_schema_is_structural() {
    let mut problems = Vec::new();
    check_structural(&schema(), "", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}

const SEED: &str = include_str!("../../deploy/examples/example-policy.yaml");

fn seed() -> Value {
    serde_yaml_ng::from_str(SEED).unwrap()
}

/// What the API server says about `doc`: the schema (after defaulting) and its CEL rules.
fn schema_errors(doc: &Value) -> Vec<String> {
    let mut doc = doc.clone();
    match admission::admit(&mut doc) {
        Ok(()) => Vec::new(),
        Err(v) => v.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_seed_example_applies_verbatim() {
    assert!(
        SEED.contains("name: meta-llama/Llama-2-70b-hf") && SEED.contains("threshold: 1000"),
        "the committed example is the seed's"
    );
    assert_eq!(schema_errors(&seed()), Vec::<String>::new());
    let policy: VllmScalingPolicyResource = serde_yaml_ng::from_str(SEED).unwrap();
    let resolved = policy.to_core().validate().unwrap();
    assert_eq!(resolved.rules.len(), 3);
    // And a status as the controller writes it validates too.
    let mut with_status = seed();
    with_status["status"] = json!({
        "currentReplicas": 2, "desiredReplicas": 3, "winningRule": "queue_length", "reference": "Deployment/llama",
        "rules": [{"name": "queue_length", "metric": "queue_length", "observed": 15.0, "threshold": 10.0, "targetType": "AverageValue", "proposal": 3, "status": "ok"}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "TargetResolved", "message": "ok", "lastTransitionTime": "2024-01-01T00:00:00Z"}],
        "history": {"recommendations": [{"at": 1_700_000_000_000_u64, "replicas": 3}], "scaleUpEvents": [{"at": 1_700_000_000_000_u64, "change": 1, "outdated": false}], "scaleDownEvents": []},
        "pendingRescale": {"from": 2, "to": 3, "decidedAtMs": 1_700_000_000_000_u64}
    });
    assert_eq!(schema_errors(&with_status), Vec::<String>::new());
}

#[test]
fn the_schema_rejects_what_it_can_type() {
    let cases: [(&str, Value, &str); 8] = [
        ("maxReplicas", json!(0), "spec.maxReplicas: must be at least 1, got 0"),
        ("minReplicas", json!("two"), "spec.minReplicas: expected a whole number, got the text \"two\""),
        ("scalingRules", json!([]), "spec.scalingRules: must hold at least 1 item, got 0"),
        (
            "scalingRules",
            json!([{"metric": "gpu_util", "threshold": 75}]),
            "spec.scalingRules[0].metric: the text \"gpu_util\" is not one of queue_length,",
        ),
        (
            "scalingRules",
            json!([{"metric": "queue_length", "threshold": 0}]),
            "spec.scalingRules[0].threshold: must be greater than 0, got 0",
        ),
        (
            "scalingRules",
            json!([{"metric": "latency", "threshold": 500, "quantile": 1.0}]),
            "spec.scalingRules[0].quantile: must be less than 1, got 1",
        ),
        (
            "scalingRules",
            json!([{"metric": "queue_length", "threshhold": 10}]),
            "spec.scalingRules[0].threshhold: unknown field `threshhold`; did you mean `threshold`?",
        ),
        ("mode", json!("aggressive"), "spec.mode: the text \"aggressive\" is not one of active, observe"),
    ];
    for (field, value, expected) in cases {
        let mut doc = seed();
        doc["spec"][field] = value;
        let errors = schema_errors(&doc);
        assert!(errors.iter().any(|e| e.starts_with(expected)), "{field}: {errors:#?}");
    }
    // Every form of `tolerance` passes the schema, quantity strings included (as
    // `kubectl get hpa -o yaml` writes them; CEL cannot read a node of unknown type); the
    // controller validates the value.
    for tolerance in
        [json!(0.2), json!({"scaleUp": 0.05, "scaleDown": "200m"}), json!(2.5), json!("50m"), json!("5e-2")]
    {
        let mut doc = seed();
        doc["spec"]["tolerance"] = tolerance.clone();
        assert!(schema_errors(&doc).is_empty(), "{tolerance}");
    }
    for tolerance in [json!(0.05), json!("50m"), json!("0.05"), json!("5e-2"), json!(0)] {
        let mut doc = seed();
        doc["spec"]["behavior"] = json!({"scaleUp": {"tolerance": tolerance}, "scaleDown": {"tolerance": tolerance}});
        assert_eq!(schema_errors(&doc), Vec::<String>::new(), "{tolerance}");
    }
}

#[test]
fn engine_history_round_trips_through_the_status_schema() {
    // The hand-written history schema must list every field EngineState serializes.
    let state = vllm_scaling_core::EngineState {
        recommendations: vec![vllm_scaling_core::Recommendation {
            at: vllm_scaling_core::Timestamp::from_millis(5),
            replicas: 2,
        }],
        scale_up_events: vec![vllm_scaling_core::ScaleEvent {
            at: vllm_scaling_core::Timestamp::from_millis(6),
            change: 1,
            outdated: true,
        }],
        scale_down_events: vec![vllm_scaling_core::ScaleEvent {
            at: vllm_scaling_core::Timestamp::from_millis(7),
            change: 2,
            outdated: false,
        }],
        ..vllm_scaling_core::EngineState::default()
    };
    let mut doc = seed();
    doc["status"] = json!({"history": serde_json::to_value(&state).unwrap()});
    assert_eq!(schema_errors(&doc), Vec::<String>::new());
    let policy: VllmScalingPolicyResource = serde_json::from_value(doc).unwrap();
    assert_eq!(policy.status.unwrap().history, Some(state));
}
