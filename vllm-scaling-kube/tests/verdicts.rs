//! `vllm-autoscaler validate` (core validation) and the API server (the CRD's schema,
//! defaults and CEL rules, evaluated in-process) give every policy the same verdict: every
//! policy the project ships (README.md, examples/, deploy/, the fuzz corpus) and a set of
//! broken ones, one per rule. The few differences that remain are listed and asserted, so
//! a new one fails here.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use vllm_scaling_kube::admission;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A document as the object `kubectl apply` would send: a whole policy as written, a bare
/// spec (or `spec:` alone, as the README shows the fields beyond the HPA) wrapped in one.
/// `None` for documents that are not policies.
fn as_policy(doc: &Value) -> Option<Value> {
    let map = doc.as_object()?;
    if let Some(policy) = map.get("policy") {
        return as_policy(policy); // a replay scenario
    }
    if let Some(kind) = map.get("kind") {
        return (kind == "vLLMScalingPolicy").then(|| doc.clone());
    }
    let spec = match map.get("spec") {
        Some(spec) if map.len() == 1 => spec.clone(),
        Some(_) => return None,
        None if map.contains_key("scalingRules") || map.contains_key("maxReplicas") => doc.clone(),
        None => return None,
    };
    Some(json!({
        "apiVersion": "autoscaler.production-stack/v1alpha1",
        "kind": "vLLMScalingPolicy",
        "metadata": {"name": "doc"},
        "spec": spec,
    }))
}

fn documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map_while(|d| Value::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect()
}

/// The fenced `yaml` blocks of a markdown file.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```yaml") => current = Some(String::new()),
            Some(block) if line.trim_start().starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            out.push(path);
        }
    }
}

/// Every shipped policy, named by where it comes from.
fn shipped() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    for (i, block) in yaml_blocks(&readme).iter().enumerate() {
        for (j, doc) in documents(block).iter().enumerate() {
            if let Some(policy) = as_policy(doc) {
                out.push((format!("README.md yaml block {i} document {j}"), policy));
            }
        }
    }
    let mut files = Vec::new();
    for dir in ["examples", "deploy", "fuzz/corpus"] {
        yaml_files(&repo(dir), &mut files);
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (j, doc) in documents(&text).iter().enumerate() {
            if let Some(policy) = as_policy(doc) {
                out.push((format!("{} document {j}", file.display()), policy));
            }
        }
    }
    out
}

fn core_verdict(policy: &Value) -> Result<(), String> {
    vllm_scaling_core::parse_policy(&serde_json::to_string(policy).unwrap()).map(|_| ()).map_err(|e| e.to_string())
}

fn api_verdict(policy: &Value) -> Result<(), String> {
    let mut object = policy.clone();
    admission::admit(&mut object).map_err(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
}

#[test]
fn every_shipped_policy_gets_the_same_verdict_from_validate_and_the_api_server() {
    let policies = shipped();
    // README (seed example, beyond-HPA spec...), examples/policies, deploy/examples, the
    // replay scenarios and the fuzz corpus.
    assert!(policies.len() >= 15, "found only {} policies: {:#?}", policies.len(), policies);
    assert!(policies.iter().any(|(name, _)| name.starts_with("README.md")));
    let mut differ = Vec::new();
    for (name, policy) in &policies {
        let (core, api) = (core_verdict(policy), api_verdict(policy));
        if core.is_ok() != api.is_ok() {
            differ.push(format!("{name}: validate {core:?}, API server {api:?}"));
        }
    }
    assert!(differ.is_empty(), "{differ:#?}");
}

fn seed() -> Value {
    serde_yaml_ng::from_str(include_str!("../../deploy/examples/example-policy.yaml")).unwrap()
}

/// The seed with `spec` fields replaced by the YAML mapping `patch` (null removes one).
fn seed_with(patch: &str) -> Value {
    let patch: Value = serde_yaml_ng::from_str(patch).unwrap();
    let mut doc = seed();
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            doc["spec"].as_object_mut().unwrap().remove(k);
        } else {
            doc["spec"][k] = v.clone();
        }
    }
    doc
}

const ARRIVALS: &str = "{metric: custom, name: arrivals, query: 'sum(rate(x[1m]))', threshold: 8}";

/// Policies both refuse, each breaking one rule: `(what, spec patch, the API server's field)`.
fn broken() -> Vec<(&'static str, String, &'static str)> {
    let q = "{metric: queue_length, threshold: 10}";
    let many: Vec<String> =
        (0..65).map(|i| format!("{{metric: custom, name: r{i}, query: 'x', threshold: 1}}")).collect();
    let policies: Vec<String> = (0..17).map(|_| "{type: Pods, value: 1, periodSeconds: 15}".to_owned()).collect();
    vec![
        ("min above max", "{minReplicas: 11}".into(), "spec.minReplicas"),
        ("minReplicas 0 without scaleToZero", "{minReplicas: 0}".into(), "spec.minReplicas"),
        ("negative minReplicas", "{minReplicas: -1}".into(), "spec.minReplicas"),
        ("maxReplicas 0", "{maxReplicas: 0}".into(), "spec.maxReplicas"),
        ("no rules", "{scalingRules: []}".into(), "spec.scalingRules"),
        ("65 rules", format!("{{scalingRules: [{}]}}", many.join(", ")), "spec.scalingRules"),
        ("percent above 100", "{scalingRules: [{metric: kv_cache_usage, threshold: 150}]}".into(), "spec.scalingRules[0].threshold"),
        ("duplicate rule", format!("{{scalingRules: [{q}, {q}]}}"), "spec.scalingRules"),
        ("unnamed custom rules", "{scalingRules: [{metric: custom, query: a, threshold: 1}, {metric: custom, query: b, threshold: 1}]}".into(), "spec.scalingRules"),
        ("custom without query", "{scalingRules: [{metric: custom, threshold: 1}]}".into(), "spec.scalingRules[0].query"),
        ("custom with blank query", "{scalingRules: [{metric: custom, query: ' ', threshold: 1}]}".into(), "spec.scalingRules[0].query"),
        ("query on a catalog rule", "{scalingRules: [{metric: queue_length, query: 'sum(x)', threshold: 1}]}".into(), "spec.scalingRules[0].query"),
        ("quantile on a non-latency rule", "{scalingRules: [{metric: queue_length, quantile: 0.9, threshold: 1}]}".into(), "spec.scalingRules[0].quantile"),
        ("quantile 1", "{scalingRules: [{metric: latency, quantile: 1, threshold: 500}]}".into(), "spec.scalingRules[0].quantile"),
        ("nvml for a vLLM metric", "{scalingRules: [{metric: queue_length, source: nvml, threshold: 1}]}".into(), "spec.scalingRules[0].source"),
        ("custom from pods", "{scalingRules: [{metric: custom, name: c, query: x, source: pods, threshold: 1}]}".into(), "spec.scalingRules[0].source"),
        ("window under 1s", "{scalingRules: [{metric: latency, window: 500ms, threshold: 500}]}".into(), "spec.scalingRules[0].window"),
        ("window of zero", "{scalingRules: [{metric: latency, window: 0m, threshold: 500}]}".into(), "spec.scalingRules[0].window"),
        ("window not a duration", "{scalingRules: [{metric: latency, window: 5x, threshold: 500}]}".into(), "spec.scalingRules[0].window"),
        ("fallback above max", "{scalingRules: [{metric: queue_length, threshold: 1, fallbackReplicas: 11}]}".into(), "spec.scalingRules"),
        ("fallback 0", "{scalingRules: [{metric: queue_length, threshold: 1, fallbackReplicas: 0}]}".into(), "spec.scalingRules[0].fallbackReplicas"),
        ("threshold 0", "{scalingRules: [{metric: queue_length, threshold: 0}]}".into(), "spec.scalingRules[0].threshold"),
        ("threshold as text", "{scalingRules: [{metric: queue_length, threshold: ten}]}".into(), "spec.scalingRules[0].threshold"),
        ("metric typo", "{scalingRules: [{metric: gpu_util, threshold: 75}]}".into(), "spec.scalingRules[0].metric"),
        ("field typo", "{scalingRules: [{metric: queue_length, threshhold: 10}]}".into(), "spec.scalingRules[0].threshhold"),
        ("rule name with a space", "{scalingRules: [{metric: queue_length, name: 'a b', threshold: 10}]}".into(), "spec.scalingRules[0].name"),
        ("unknown spec field", "{minReplica: 1}".into(), "spec.minReplica"),
        ("empty target name", "{scaleTargetRef: {kind: Deployment, name: ' '}}".into(), "spec.scaleTargetRef.name"),
        ("target without kind", "{scaleTargetRef: {name: d}}".into(), "spec.scaleTargetRef.kind"),
        ("mode typo", "{mode: aggressive}".into(), "spec.mode"),
        ("panic rule unknown", format!("{{scalingRules: [{q}], panic: {{rules: [arrivals]}}}}"), "spec.panic.rules"),
        ("panic rules empty", format!("{{scalingRules: [{q}], panic: {{rules: []}}}}"), "spec.panic.rules"),
        ("panic window above stable", format!("{{scalingRules: [{q}], panic: {{windowSeconds: 90}}}}"), "spec.panic.windowSeconds"),
        ("panic threshold 50", format!("{{scalingRules: [{q}], panic: {{thresholdPercent: 50}}}}"), "spec.panic.thresholdPercent"),
        ("panic rate 1", format!("{{scalingRules: [{q}], panic: {{maxScaleUpRate: 1}}}}"), "spec.panic.maxScaleUpRate"),
        ("activation rule unknown", format!("{{minReplicas: 0, scalingRules: [{q}], scaleToZero: {{activationRule: arrivals}}}}"), "spec.scaleToZero.activationRule"),
        ("scaleToZero without a zero", format!("{{scalingRules: [{ARRIVALS}], scaleToZero: {{activationRule: arrivals}}}}"), "spec.scaleToZero"),
        ("idle above a day", format!("{{minReplicas: 0, scalingRules: [{ARRIVALS}], scaleToZero: {{activationRule: arrivals, idleSeconds: 86401}}}}"), "spec.scaleToZero.idleSeconds"),
        ("predictive rule unknown", format!("{{scalingRules: [{q}], predictive: {{rule: arrivals}}}}"), "spec.predictive.rule"),
        ("predictive on a Value rule without capacity", "{predictive: {rule: latency}}".into(), "spec.predictive.capacityPerReplica"),
        ("predictive confidence 1", format!("{{scalingRules: [{q}], predictive: {{rule: queue_length, confidence: 1}}}}"), "spec.predictive.confidence"),
        ("predictive 2 samples", format!("{{scalingRules: [{q}], predictive: {{rule: queue_length, minSamples: 2}}}}"), "spec.predictive.minSamples"),
        ("headroom 100", "{survivorsCheck: {headroomPercent: 100}}".into(), "spec.survivorsCheck.headroomPercent"),
        ("17 rate policies", format!("{{behavior: {{scaleUp: {{policies: [{}]}}}}}}", policies.join(", ")), "spec.behavior.scaleUp.policies"),
        ("rate policy of 0 pods", "{behavior: {scaleDown: {policies: [{type: Pods, value: 0, periodSeconds: 15}]}}}".into(), "spec.behavior.scaleDown.policies[0].value"),
        ("stabilization above an hour", "{behavior: {scaleDown: {stabilizationWindowSeconds: 3601}}}".into(), "spec.behavior.scaleDown.stabilizationWindowSeconds"),
        ("select policy typo", "{behavior: {scaleUp: {selectPolicy: Maximum}}}".into(), "spec.behavior.scaleUp.selectPolicy"),
        ("schedule min 0 without scaleToZero", "{schedules: [{timeZone: UTC, start: '08:00', end: '20:00', minReplicas: 0}]}".into(), "spec.schedules"),
        ("schedule bounds inverted", "{schedules: [{timeZone: UTC, start: '08:00', end: '20:00', minReplicas: 12}]}".into(), "spec.schedules"),
        ("schedule names twice", "{schedules: [{name: a, timeZone: UTC, start: '08:00', end: '20:00', minReplicas: 2}, {name: a, timeZone: UTC, start: '20:00', end: '22:00', minReplicas: 2}]}".into(), "spec.schedules"),
        ("schedule without bounds", "{schedules: [{timeZone: UTC, start: '08:00', end: '20:00'}]}".into(), "spec.schedules[0].minReplicas"),
        ("schedule of no time", "{schedules: [{timeZone: UTC, start: '08:00', end: '08:00', minReplicas: 2}]}".into(), "spec.schedules[0].end"),
        ("schedule of a whole day", "{schedules: [{timeZone: UTC, start: '00:00', end: '24:00', minReplicas: 2}]}".into(), "spec.schedules[0].end"),
        ("schedule day twice", "{schedules: [{timeZone: UTC, days: [Mon, Monday], start: '08:00', end: '20:00', minReplicas: 2}]}".into(), "spec.schedules[0].days"),
        ("schedule no days", "{schedules: [{timeZone: UTC, days: [], start: '08:00', end: '20:00', minReplicas: 2}]}".into(), "spec.schedules[0].days"),
        ("schedule day typo", "{schedules: [{timeZone: UTC, days: [Mnday], start: '08:00', end: '20:00', minReplicas: 2}]}".into(), "spec.schedules[0].days[0]"),
        ("schedule clock without a zero", "{schedules: [{timeZone: UTC, start: '8:00', end: '20:00', minReplicas: 2}]}".into(), "spec.schedules[0].start"),
        ("schedule start 24:00", "{schedules: [{timeZone: UTC, start: '24:00', end: '20:00', minReplicas: 2}]}".into(), "spec.schedules[0].start"),
        ("schedule without a zone", "{schedules: [{start: '08:00', end: '20:00', minReplicas: 2}]}".into(), "spec.schedules[0].timeZone"),
    ]
}

#[test]
fn broken_policies_are_refused_by_both_naming_the_field() {
    let mut problems = Vec::new();
    for (what, patch, field) in broken() {
        let doc = seed_with(&patch);
        let core = core_verdict(&doc);
        let mut object = doc.clone();
        let api = admission::admit(&mut object);
        match (&core, &api) {
            (Err(_), Err(violations)) if violations.iter().any(|v| v.path == field) => {}
            _ => {
                problems.push(format!("{what}: validate {core:?}, API server {api:?} (expected a refusal at {field})"))
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn policies_both_accept() {
    for patch in [
        // Scale to zero: `minReplicas: 0` with scaleToZero (the CRD refused it before).
        format!("{{minReplicas: 0, scalingRules: [{ARRIVALS}], scaleToZero: {{activationRule: arrivals}}}}"),
        // Or a zero only in a schedule.
        format!(
            "{{scalingRules: [{ARRIVALS}], scaleToZero: {{activationRule: arrivals}}, schedules: [{{timeZone: UTC, start: '20:00', end: '06:00', minReplicas: 0}}]}}"
        ),
        "{minReplicas: null, mode: null}".to_owned(),
        "{scalingRules: [{metric: latency, threshold: 800, window: 1m30s, quantile: 0.99}, {metric: gpu_utilization, source: nvml, threshold: 80}]}".to_owned(),
        "{schedules: [{name: day, timeZone: Europe/Berlin, days: [Mon, Tuesday], start: '08:00', end: '24:00', maxReplicas: 4}]}".to_owned(),
        format!("{{scalingRules: [{ARRIVALS}, {{metric: queue_length, threshold: 5}}], predictive: {{rule: arrivals, capacityPerReplica: 8}}, panic: {{rules: [arrivals, queue_length]}}}}"),
        "{tolerance: {scaleUp: 0.05}, behavior: {scaleUp: {policies: [{type: Percent, value: 900, periodSeconds: 60}]}}}".to_owned(),
    ] {
        let doc = seed_with(&patch);
        assert_eq!(core_verdict(&doc), Ok(()), "{patch}");
        assert_eq!(api_verdict(&doc), Ok(()), "{patch}");
    }
}

#[test]
fn the_api_server_writes_the_defaults() {
    let mut doc = seed_with("{minReplicas: null}");
    admission::admit(&mut doc).unwrap();
    assert_eq!(doc["spec"]["minReplicas"], 1);
    assert_eq!(doc["spec"]["mode"], "active");
}

/// What the API server cannot check and the controller reports (`Ready=False`): each is
/// documented in the README, and asserted here so the list cannot grow unnoticed.
#[test]
fn the_known_differences_are_exactly_these() {
    for (what, patch) in [
        (
            "a time zone outside the IANA database",
            "{schedules: [{timeZone: Mars/Olympus, start: '08:00', end: '20:00', minReplicas: 2}]}",
        ),
        ("a tolerance out of range (CEL cannot read a number-or-mapping)", "{tolerance: 1.5}"),
        (
            "a window of milliseconds adding up to under 1s",
            "{scalingRules: [{metric: latency, window: 500ms400ms, threshold: 500}]}",
        ),
    ] {
        let doc = seed_with(patch);
        assert!(core_verdict(&doc).is_err(), "{what}: validate accepts it now: move it to the broken set");
        assert_eq!(api_verdict(&doc), Ok(()), "{what}: the API server refuses it now: move it to the broken set");
    }
}

#[test]
fn the_cel_rules_compile_and_use_only_what_kubernetes_offers() {
    let schema = admission::policy_schema();
    let mut rules = Vec::new();
    collect_rules(schema, &mut rules);
    assert!(rules.len() >= 20, "{rules:#?}");
    // Kubernetes' CEL: the standard macros and functions, the strings extension, regex `matches`.
    let allowed =
        ["has", "all", "exists", "exists_one", "size", "type", "double", "int", "matches", "substring", "@in", "in"];
    for rule in rules {
        let program = cel::Program::compile(&rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
        let references = program.references();
        for f in references.functions() {
            let operator = f.starts_with('_') || f.starts_with('!') || f.starts_with('@');
            assert!(operator || allowed.contains(&f), "{rule}: `{f}` is not a Kubernetes CEL function");
        }
    }
}

fn collect_rules(node: &Value, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            for rule in map.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
                out.push(rule["rule"].as_str().unwrap().to_owned());
            }
            map.values().for_each(|v| collect_rules(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_rules(v, out)),
        _ => {}
    }
}

/// The API server estimates a CEL rule's cost from the sizes the schema bounds (a v1.36
/// server refuses a CRD whose estimate is too high): every list and string of the spec is
/// bounded, and every pattern compiles.
#[test]
fn every_list_and_string_of_the_spec_is_bounded() {
    fn walk(node: &Value, path: &str, problems: &mut Vec<String>) {
        match node.get("type").and_then(Value::as_str) {
            Some("array") if node.get("maxItems").is_none() => problems.push(format!("{path}: no maxItems")),
            Some("string") if node.get("maxLength").is_none() => problems.push(format!("{path}: no maxLength")),
            _ => {}
        }
        if let Some(p) = node.get("pattern").and_then(Value::as_str)
            && regex::Regex::new(p).is_err()
        {
            problems.push(format!("{path}: pattern {p} does not compile"));
        }
        for (k, v) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
            walk(v, &format!("{path}.{k}"), problems);
        }
        if let Some(items) = node.get("items") {
            walk(items, &format!("{path}[]"), problems);
        }
    }
    let mut problems = Vec::new();
    walk(&admission::policy_schema()["properties"]["spec"], "spec", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn the_fake_api_server_admits_like_the_real_one() {
    use kube::api::{Api, PostParams};
    use vllm_scaling_kube::VllmScalingPolicyResource;
    use vllm_scaling_kube::fake_api::FakeApiServer;

    let server = FakeApiServer::start().await.unwrap();
    let api: Api<VllmScalingPolicyResource> = Api::namespaced(server.client(), "default");
    // Scale to zero applies now; the stored object carries the defaults.
    let ok: VllmScalingPolicyResource = serde_json::from_value(seed_with(&format!(
        "{{minReplicas: 0, scalingRules: [{ARRIVALS}], scaleToZero: {{activationRule: arrivals}}}}"
    )))
    .unwrap();
    let created = api.create(&PostParams::default(), &ok).await.unwrap();
    assert_eq!(created.spec.0.min_replicas, Some(0));
    assert_eq!(created.spec.0.mode, Some(vllm_scaling_core::Mode::Active));
    // A broken one gets 422 naming the field, and is not stored.
    let mut bad = seed_with("{minReplicas: 11}");
    bad["metadata"]["name"] = json!("bad");
    let bad: VllmScalingPolicyResource = serde_json::from_value(bad).unwrap();
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    let kube::Error::Api(status) = err else { panic!("{err}") };
    assert_eq!(status.code, 422);
    assert!(status.message.contains("spec.minReplicas: minReplicas must not exceed maxReplicas"), "{}", status.message);
    assert!(api.get_opt("bad").await.unwrap().is_none());
    // So does an update that breaks a stored policy.
    let mut broken = created.clone();
    broken.spec.0.min_replicas = Some(11);
    let err = api.replace("example-policy", &PostParams::default(), &broken).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 422), "{err}");
}
