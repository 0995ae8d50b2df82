//! The CRD: committed copies do not drift from the types, the schema is structural (the
//! rules a real API server enforces), and it accepts the seed's example verbatim while
//! rejecting what it can type.

use std::path::PathBuf;

use serde_json::{Value, json};
use vllm_scaling_kube::{VllmScalingPolicyResource, crd, crd_yaml};

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
    assert_eq!(columns, ["Target", "Min", "Max", "Replicas", "Desired", "Winning Rule", "Age"]);
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

/// A small validator for the OpenAPI subset the schema uses, with the API server's
/// strict field validation (unknown fields are errors, as `kubectl apply` reports them).
fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema.get("nullable") != Some(&json!(true)) && schema.get("x-kubernetes-preserve-unknown-fields").is_none()
        {
            errors.push(format!("{path}: null"));
        }
        return;
    }
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true)) && schema.get("type").is_none() {
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let type_ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        errors.push(format!("{path}: expected {ty}, got {value}"));
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {options:?}"));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            let exclusive = schema.get("exclusiveMinimum") == Some(&json!(true));
            if n < min || (exclusive && n == min) {
                errors.push(format!("{path}: {n} below minimum {min}"));
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            let exclusive = schema.get("exclusiveMaximum") == Some(&json!(true));
            if n > max || (exclusive && n == max) {
                errors.push(format!("{path}: {n} above maximum {max}"));
            }
        }
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            for req in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                if !map.contains_key(req.as_str().unwrap()) {
                    errors.push(format!("{path}.{}: required", req.as_str().unwrap()));
                }
            }
            let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
            for (k, v) in map {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => validate(s, v, &format!("{path}.{k}"), errors),
                    None if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) => {}
                    None if !preserve => errors.push(format!("{path}.{k}: unknown field")),
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                errors.push(format!("{path}: fewer than {min} items"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

const SEED: &str = include_str!("../../deploy/examples/example-policy.yaml");

fn seed() -> Value {
    serde_yaml_ng::from_str(SEED).unwrap()
}

fn schema_errors(doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    validate(&schema(), doc, "", &mut errors);
    errors
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
        ("maxReplicas", json!(0), ".spec.maxReplicas: 0 below minimum 1"),
        ("minReplicas", json!("two"), ".spec.minReplicas: expected integer"),
        ("scalingRules", json!([]), ".spec.scalingRules: fewer than 1 items"),
        (
            "scalingRules",
            json!([{"metric": "gpu_util", "threshold": 75}]),
            ".spec.scalingRules[0].metric: \"gpu_util\" is not one of",
        ),
        (
            "scalingRules",
            json!([{"metric": "queue_length", "threshold": 0}]),
            ".spec.scalingRules[0].threshold: 0 below minimum 0",
        ),
        (
            "scalingRules",
            json!([{"metric": "latency", "threshold": 500, "quantile": 1.0}]),
            ".spec.scalingRules[0].quantile: 1 above maximum 1",
        ),
        (
            "scalingRules",
            json!([{"metric": "queue_length", "threshhold": 10}]),
            ".spec.scalingRules[0].threshhold: unknown field",
        ),
        ("mode", json!("aggressive"), ".spec.mode: \"aggressive\" is not one of"),
    ];
    for (field, value, expected) in cases {
        let mut doc = seed();
        doc["spec"][field] = value;
        let errors = schema_errors(&doc);
        assert!(errors.iter().any(|e| e.starts_with(expected)), "{field}: {errors:#?}");
    }
    // Both forms of `tolerance` pass the schema; the controller validates the value.
    for tolerance in [json!(0.2), json!({"scaleUp": 0.05, "scaleDown": 0.2}), json!(2.5)] {
        let mut doc = seed();
        doc["spec"]["tolerance"] = tolerance;
        assert!(schema_errors(&doc).is_empty());
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
