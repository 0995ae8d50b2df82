//! `vllm-autoscaler import FILE`: an `autoscaling/v2` HorizontalPodAutoscaler or a KEDA
//! `ScaledObject` (Prometheus triggers) on vLLM metrics, as the equivalent
//! `vLLMScalingPolicy` YAML on stdout. What has no equivalent is said in `# note:`
//! comments at the top of the output, so the notes travel with the file.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Deserialize as _;
use serde_json::{Map, Value, json};

/// Arguments of `import`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  vllm-autoscaler import hpa.yaml > policy.yaml\n  \
                        kubectl get hpa llama -o yaml | vllm-autoscaler import -")]
pub(crate) struct Args {
    /// The HPA or ScaledObject (YAML or JSON; several `---` documents give several
    /// policies), or `-` for standard input.
    file: PathBuf,
}

/// One converted policy: the object and what did not carry over.
#[derive(Debug)]
pub(crate) struct Imported {
    /// The `vLLMScalingPolicy`.
    pub(crate) policy: Value,
    /// A sentence per thing with no equivalent, or changed on the way.
    pub(crate) notes: Vec<String>,
}

/// A vLLM (or DCGM) series as the catalog metric it is, and the factor from the series'
/// unit to the catalog's (vLLM's KV-cache usage is a 0-1 fraction, the catalog's percent).
fn catalog_metric(series: &str) -> Option<(&'static str, f64)> {
    // Google Managed Prometheus names a series `prometheus.googleapis.com|vllm:x|gauge`.
    let series = match series.split('|').collect::<Vec<_>>()[..] {
        [_, name, _] => name,
        _ => series,
    };
    // prometheus-adapter renames `vllm:x` to `vllm_x` (custom-metric names cannot hold `:`).
    let name = series.strip_prefix("vllm:").or_else(|| series.strip_prefix("vllm_")).unwrap_or(series);
    Some(match name {
        "num_requests_waiting" => ("queue_length", 1.0),
        "num_requests_running" => ("running_requests", 1.0),
        "kv_cache_usage_perc" | "gpu_cache_usage_perc" => ("kv_cache_usage", 100.0),
        // DCGM's utilization, raw or relabelled as the kubernetes/examples adapter rule does.
        "DCGM_FI_DEV_GPU_UTIL"
        | "dcgm_fi_dev_gpu_util"
        | "dcgm_fi_dev_gpu_util_relabelled"
        | "gpu_utilization_percent" => ("gpu_utilization", 1.0),
        _ => return None,
    })
}

/// A Kubernetes quantity (`10`, `500m`, `1.5k`, `2Ki`) as a number: a JSON number, or text
/// in `resource.Quantity`'s grammar, read by the same parser as the policy's tolerances.
fn quantity(v: &Value) -> Result<f64, String> {
    if let Some(n) = v.as_f64() {
        return Ok(n);
    }
    let text = v.as_str().ok_or_else(|| format!("`{v}` is not a quantity"))?;
    vllm_scaling_core::parse_quantity(text.trim())
}

/// Rounds away float noise of a scaled threshold (`0.8 * 100` is `80.00000000000001`).
fn tidy(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

fn rule(metric: &str, threshold: f64, target_type: &str) -> Value {
    json!({"metric": metric, "threshold": tidy(threshold), "targetType": target_type})
}

/// The policy skeleton: name, namespace, target and bounds.
fn skeleton(doc: &Value, target: Value, min: Option<i64>, max: i64) -> Value {
    let mut metadata = Map::new();
    for key in ["name", "namespace"] {
        if let Some(v) = doc.pointer(&format!("/metadata/{key}")) {
            metadata.insert(key.to_owned(), v.clone());
        }
    }
    let mut spec = Map::new();
    spec.insert("scaleTargetRef".into(), target);
    if let Some(min) = min {
        spec.insert("minReplicas".into(), json!(min));
    }
    spec.insert("maxReplicas".into(), json!(max));
    json!({
        "apiVersion": vllm_scaling_core::API_VERSION,
        "kind": vllm_scaling_core::KIND,
        "metadata": metadata,
        "spec": spec,
    })
}

/// Converts an `autoscaling/v2` HorizontalPodAutoscaler.
fn from_hpa(doc: &Value) -> Result<Imported, String> {
    let spec = doc.get("spec").ok_or("the HPA has no spec")?;
    let mut notes = Vec::new();
    let target = spec.get("scaleTargetRef").cloned().ok_or("the HPA has no spec.scaleTargetRef")?;
    let max = spec.get("maxReplicas").and_then(Value::as_i64).ok_or("the HPA has no spec.maxReplicas")?;
    let min = spec.get("minReplicas").and_then(Value::as_i64);
    let mut policy = skeleton(doc, target, min, max);
    let mut rules = Vec::new();
    for (i, metric) in spec.get("metrics").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let ty = metric.get("type").and_then(Value::as_str).unwrap_or_default();
        let key = match ty {
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            "Resource" | "ContainerResource" => {
                let which = metric.pointer("/resource/name").or_else(|| metric.pointer("/containerResource/name"));
                notes.push(format!(
                    "metrics[{i}]: the {ty} metric `{}` (CPU or memory) has no equivalent: vLLM's load shows in its queue \
                     and KV cache, not in CPU; it was left out",
                    which.and_then(Value::as_str).unwrap_or("?")
                ));
                continue;
            }
            other => {
                notes.push(format!("metrics[{i}]: the metric type `{other}` is not known; it was left out"));
                continue;
            }
        };
        let name = metric.pointer(&format!("/{key}/metric/name")).and_then(Value::as_str).unwrap_or_default();
        let Some((catalog, factor)) = catalog_metric(name) else {
            notes.push(format!(
                "metrics[{i}]: `{name}` is not a vLLM metric of the catalog: its values come from an adapter rule this \
                 file does not hold; write it as a `custom` rule with its PromQL. It was left out"
            ));
            continue;
        };
        if metric.pointer(&format!("/{key}/metric/selector")).is_some() {
            notes.push(format!(
                "metrics[{i}]: the metric selector was dropped: the controller reads the target's own pods"
            ));
        }
        let target = metric.pointer(&format!("/{key}/target")).cloned().unwrap_or(Value::Null);
        let (target_type, value) = match target.get("type").and_then(Value::as_str) {
            Some("AverageValue") => ("AverageValue", target.get("averageValue")),
            Some("Value") => ("Value", target.get("value")),
            Some("Utilization") => {
                notes.push(format!("metrics[{i}]: a Utilization target applies to resources only; it was left out"));
                continue;
            }
            _ => return Err(format!("metrics[{i}]: the target has no type (AverageValue or Value)")),
        };
        let value = value.ok_or_else(|| format!("metrics[{i}]: the {target_type} target has no value"))?;
        let threshold = quantity(value).map_err(|e| format!("metrics[{i}]: {e}"))? * factor;
        if factor != 1.0 {
            notes.push(format!(
                "metrics[{i}]: `{name}` is a 0-1 fraction; the catalog's {catalog} is a percentage, so the threshold is {}",
                tidy(threshold)
            ));
        }
        rules.push(rule(catalog, threshold, target_type));
    }
    policy["spec"]["scalingRules"] = Value::Array(rules);
    if let Some(behavior) = spec.get("behavior") {
        policy["spec"]["behavior"] = behavior.clone();
    }
    Ok(Imported { policy, notes })
}

/// Converts a KEDA `ScaledObject` whose triggers are Prometheus queries.
fn from_scaled_object(doc: &Value) -> Result<Imported, String> {
    let spec = doc.get("spec").ok_or("the ScaledObject has no spec")?;
    let mut notes = Vec::new();
    let target_in = spec.get("scaleTargetRef").ok_or("the ScaledObject has no spec.scaleTargetRef")?;
    let target = json!({
        "apiVersion": target_in.get("apiVersion").cloned().unwrap_or(json!("apps/v1")),
        "kind": target_in.get("kind").cloned().unwrap_or(json!("Deployment")),
        "name": target_in.get("name").cloned().ok_or("the ScaledObject has no spec.scaleTargetRef.name")?,
    });
    // KEDA's defaults: minReplicaCount 0, maxReplicaCount 100.
    let min = spec.get("minReplicaCount").and_then(Value::as_i64).unwrap_or(0);
    let max = spec.get("maxReplicaCount").and_then(Value::as_i64).unwrap_or(100);
    let mut policy = skeleton(doc, target, Some(min), max);
    let mut rules = Vec::new();
    let mut activation: Option<(String, f64)> = None;
    for (i, trigger) in spec.get("triggers").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let ty = trigger.get("type").and_then(Value::as_str).unwrap_or_default();
        if ty != "prometheus" {
            notes.push(format!("triggers[{i}]: a `{ty}` trigger has no equivalent (only prometheus); it was left out"));
            continue;
        }
        let meta = trigger.get("metadata").cloned().unwrap_or(Value::Null);
        let query = meta.get("query").and_then(Value::as_str).ok_or_else(|| format!("triggers[{i}]: no query"))?;
        let threshold = quantity(meta.get("threshold").ok_or_else(|| format!("triggers[{i}]: no threshold"))?)
            .map_err(|e| format!("triggers[{i}].metadata.threshold: {e}"))?;
        let target_type = match trigger.get("metricType").and_then(Value::as_str) {
            None | Some("AverageValue") => "AverageValue",
            Some("Value") => "Value",
            Some(other) => {
                notes.push(format!("triggers[{i}]: metricType `{other}` has no equivalent; it was left out"));
                continue;
            }
        };
        let (mut r, key) = match recognize(query) {
            Some((catalog, factor, dropped)) => {
                if dropped {
                    notes.push(format!(
                        "triggers[{i}]: `{query}` is the catalog's {catalog}; its label matchers were dropped: the \
                         controller reads the target's own pods"
                    ));
                }
                (rule(catalog, threshold * factor, target_type), catalog.to_owned())
            }
            None => {
                let name = trigger.get("name").and_then(Value::as_str).map_or_else(|| format!("trigger-{i}"), sanitize);
                let mut r = rule("custom", threshold, target_type);
                r["name"] = json!(name);
                r["query"] = json!(query);
                (r, name)
            }
        };
        if meta.get("serverAddress").is_some() {
            r["source"] = json!("prometheus");
        }
        if activation.is_none() {
            let threshold = match meta.get("activationThreshold") {
                Some(v) => quantity(v).map_err(|e| format!("triggers[{i}].metadata.activationThreshold: {e}"))?,
                None => 0.0,
            };
            activation = Some((key, threshold));
        }
        rules.push(r);
    }
    if let Some(fallback) = spec.get("fallback").and_then(|f| f.get("replicas")).and_then(Value::as_i64) {
        for r in &mut rules {
            r["fallbackReplicas"] = json!(fallback);
        }
        notes.push(format!(
            "fallback: each rule asks for {fallback} replicas while its metric fails, never fewer than it runs, and a \
             healthy rule that asks for more still wins (KEDA's `failureThreshold` has no equivalent: it applies at \
             once)"
        ));
    }
    if min == 0 {
        let (rule, threshold) = activation.ok_or("the ScaledObject has no prometheus trigger")?;
        let idle = spec.get("cooldownPeriod").and_then(Value::as_i64).unwrap_or(300);
        policy["spec"]["scaleToZero"] =
            json!({"activationRule": rule, "activationThreshold": threshold, "idleSeconds": idle});
        notes.push(format!(
            "minReplicaCount 0: scale to zero on rule `{rule}` after {idle} s idle (cooldownPeriod); at zero there are \
             no pods, so the activation rule must be one Prometheus answers without them"
        ));
    }
    if let Some(behavior) = spec.pointer("/advanced/horizontalPodAutoscalerConfig/behavior") {
        policy["spec"]["behavior"] = behavior.clone();
    }
    if let Some(polling) = spec.get("pollingInterval") {
        notes.push(format!(
            "pollingInterval {polling}: the controller evaluates each policy every 15 s (its --interval), not per policy"
        ));
    }
    for key in ["idleReplicaCount", "initialCooldownPeriod"] {
        if spec.get(key).is_some() {
            notes.push(format!("{key} has no equivalent; it was left out"));
        }
    }
    if spec.pointer("/advanced/scalingModifiers").is_some() {
        notes.push("advanced.scalingModifiers has no equivalent: the policy takes the largest rule proposal".into());
    }
    policy["spec"]["scalingRules"] = Value::Array(rules);
    Ok(Imported { policy, notes })
}

/// A rule name from a trigger name: letters, digits, `_` and `-`, at most 63.
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(63).collect()
}

/// A query that is a catalog metric: a vLLM series, alone or summed (`sum(x{...})`),
/// which an AverageValue threshold reads as the catalog does (the total over pods). The
/// flag says label matchers were dropped.
fn recognize(query: &str) -> Option<(&'static str, f64, bool)> {
    use promql_parser::parser::{self, Expr};
    let mut expr = parser::parse(query).ok()?;
    if let Expr::Aggregate(a) = &expr {
        let sum = a.op.to_string().eq_ignore_ascii_case("sum");
        if !sum || a.modifier.is_some() || a.param.is_some() {
            return None;
        }
        expr = (*a.expr).clone();
    }
    if let Expr::Paren(p) = &expr {
        expr = (*p.expr).clone();
    }
    let Expr::VectorSelector(v) = expr else { return None };
    let name = v.name.as_deref()?;
    let (catalog, factor) = catalog_metric(name)?;
    // Per-pod or fraction semantics would change for GPU series read this way.
    if catalog == "gpu_utilization" {
        return None;
    }
    let dropped = v.matchers.matchers.iter().any(|m| m.name != "__name__");
    Some((catalog, factor, dropped))
}

/// Converts every HPA or ScaledObject of `text`.
pub(crate) fn import_text(text: &str) -> Result<Vec<Imported>, String> {
    let mut out = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value =
            serde_yaml_ng::Value::deserialize(document).map_err(|e| format!("document {i}: not valid YAML: {e}"))?;
        if value.is_null() {
            continue;
        }
        let doc = serde_json::to_value(&value).map_err(|e| format!("document {i}: {e}"))?;
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let imported = match (kind, api_version) {
            ("HorizontalPodAutoscaler", "autoscaling/v2") => from_hpa(&doc),
            ("HorizontalPodAutoscaler", other) => Err(format!(
                "an HPA of {other}: only autoscaling/v2 is converted (`kubectl get hpa NAME -o yaml` prints it)"
            )),
            ("ScaledObject", v) if v.starts_with("keda.sh/") => from_scaled_object(&doc),
            _ => Err(format!(
                "a {kind} ({api_version}) is neither an autoscaling/v2 HorizontalPodAutoscaler nor a KEDA ScaledObject"
            )),
        }
        .map_err(|e| format!("document {i}: {e}"))?;
        if imported.policy["spec"]["scalingRules"].as_array().is_none_or(Vec::is_empty) {
            return Err(format!("document {i}: no metric converts into a scaling rule: {}", imported.notes.join("; ")));
        }
        // What it wrote must be a valid policy, or the conversion is wrong.
        let json = serde_json::to_string(&imported.policy).map_err(|e| e.to_string())?;
        vllm_scaling_core::parse_policy(&json)
            .map_err(|e| format!("document {i}: the converted policy is invalid: {e}"))?;
        out.push(imported);
    }
    if out.is_empty() {
        return Err("no HorizontalPodAutoscaler or ScaledObject found: the text is empty".into());
    }
    Ok(out)
}

/// The YAML printed for the converted policies, notes as comments.
pub(crate) fn render(imported: &[Imported]) -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for (i, one) in imported.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        for note in &one.notes {
            out.push_str(&format!("# note: {note}\n"));
        }
        out.push_str(&serde_yaml_ng::to_string(&one.policy)?);
    }
    Ok(out)
}

/// Prints the converted policy; exit 1 with the reason when nothing converts.
pub(crate) fn run(args: Args) -> ExitCode {
    let shown = args.file.display().to_string();
    let text = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map(|_| text)
    } else {
        std::fs::read_to_string(&args.file)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{shown}: cannot read: {e}");
            return ExitCode::from(1);
        }
    };
    match import_text(&text).and_then(|i| render(&i).map_err(|e| e.to_string())) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{shown}: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Imported {
        let mut all = import_text(text).unwrap();
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    /// kubernetes/examples `AI/vllm-deployment/hpa/`: a Pods metric through prometheus-adapter,
    /// which renames `vllm:num_requests_running` to `vllm_num_requests_running`.
    const K8S_EXAMPLES_HPA: &str = r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: gemma-server-hpa
  namespace: default
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: vllm-gemma-deployment
  minReplicas: 1
  maxReplicas: 5
  metrics:
  - type: Pods
    pods:
      metric:
        name: vllm_num_requests_running
      target:
        type: AverageValue
        averageValue: "4"
  behavior:
    scaleUp:
      stabilizationWindowSeconds: 0
      policies:
      - type: Pods
        value: 1
        periodSeconds: 15
    scaleDown:
      stabilizationWindowSeconds: 30
      policies:
      - type: Percent
        value: 100
        periodSeconds: 15
"#;

    /// Shaped like GKE's vLLM autoscaling guide: queue and KV-cache metrics from Google
    /// Managed Prometheus (`prometheus.googleapis.com|<series>|gauge`) as Pods metrics, plus
    /// a CPU one.
    const GKE_HPA: &str = r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: vllm-hpa
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: vllm-llama3-deployment
  minReplicas: 1
  maxReplicas: 8
  metrics:
  - type: Pods
    pods:
      metric:
        name: prometheus.googleapis.com|vllm:num_requests_waiting|gauge
      target:
        type: AverageValue
        averageValue: 10
  - type: Pods
    pods:
      metric:
        name: prometheus.googleapis.com|vllm:gpu_cache_usage_perc|gauge
      target:
        type: AverageValue
        averageValue: 800m
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: 80
"#;

    /// production-stack's Helm `scaledobject-vllm.yaml`: a Prometheus trigger on the queue.
    const PRODUCTION_STACK_KEDA: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: vllm-llama3-scaledobject
spec:
  scaleTargetRef:
    name: vllm-llama3-deployment-vllm
  minReplicaCount: 1
  maxReplicaCount: 4
  pollingInterval: 15
  cooldownPeriod: 360
  triggers:
  - type: prometheus
    metadata:
      serverAddress: http://prometheus-operated.monitoring.svc:9090
      metricName: vllm:num_requests_waiting
      query: vllm:num_requests_waiting{model="llama3"}
      threshold: '5'
"#;

    #[test]
    fn the_kubernetes_examples_hpa_converts() {
        let i = one(K8S_EXAMPLES_HPA);
        let spec = &i.policy["spec"];
        assert_eq!(i.policy["metadata"], json!({"name": "gemma-server-hpa", "namespace": "default"}));
        assert_eq!(spec["scaleTargetRef"]["name"], "vllm-gemma-deployment");
        assert_eq!((spec["minReplicas"].clone(), spec["maxReplicas"].clone()), (json!(1), json!(5)));
        assert_eq!(
            spec["scalingRules"],
            json!([{"metric": "running_requests", "threshold": 4.0, "targetType": "AverageValue"}])
        );
        assert_eq!(spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 30);
        assert!(i.notes.is_empty(), "{:?}", i.notes);
    }

    #[test]
    fn the_gke_hpa_converts_with_a_note_for_cpu_and_the_fraction() {
        let i = one(GKE_HPA);
        assert_eq!(
            i.policy["spec"]["scalingRules"],
            json!([
                {"metric": "queue_length", "threshold": 10.0, "targetType": "AverageValue"},
                {"metric": "kv_cache_usage", "threshold": 80.0, "targetType": "AverageValue"}
            ])
        );
        assert_eq!(i.notes.len(), 2, "{:?}", i.notes);
        assert!(i.notes[0].contains("0-1 fraction") && i.notes[0].contains("threshold is 80"), "{:?}", i.notes);
        assert!(i.notes[1].contains("`cpu`") && i.notes[1].contains("left out"), "{:?}", i.notes);
        let yaml = render(&[i]).unwrap();
        assert!(
            yaml.starts_with(
                "# note: metrics[1]: `prometheus.googleapis.com|vllm:gpu_cache_usage_perc|gauge` is a 0-1 fraction"
            ),
            "{yaml}"
        );
        assert!(yaml.contains("kind: vLLMScalingPolicy"), "{yaml}");
    }

    #[test]
    fn the_production_stack_scaled_object_converts() {
        let i = one(PRODUCTION_STACK_KEDA);
        let spec = &i.policy["spec"];
        assert_eq!(
            spec["scaleTargetRef"],
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm-llama3-deployment-vllm"})
        );
        assert_eq!(
            spec["scalingRules"],
            json!([{"metric": "queue_length", "threshold": 5.0, "targetType": "AverageValue", "source": "prometheus"}])
        );
        assert!(spec.get("scaleToZero").is_none());
        assert!(i.notes.iter().any(|n| n.contains("label matchers were dropped")), "{:?}", i.notes);
        assert!(i.notes.iter().any(|n| n.starts_with("pollingInterval 15")), "{:?}", i.notes);
    }

    #[test]
    fn keda_scale_to_zero_and_custom_queries() {
        let text = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: z}
spec:
  scaleTargetRef: {name: vllm}
  cooldownPeriod: 600
  fallback: {failureThreshold: 3, replicas: 2}
  triggers:
  - type: prometheus
    name: arrivals
    metadata:
      query: sum(rate(router_requests_total{model="llama"}[1m]))
      threshold: "8"
      activationThreshold: "0.5"
  - type: cpu
    metadata: {value: "50"}
"#;
        let i = one(text);
        let spec = &i.policy["spec"];
        assert_eq!(spec["minReplicas"], 0);
        assert_eq!(spec["maxReplicas"], 100);
        assert_eq!(spec["scalingRules"][0]["metric"], "custom");
        assert_eq!(spec["scalingRules"][0]["name"], "arrivals");
        assert_eq!(spec["scalingRules"][0]["fallbackReplicas"], 2);
        assert_eq!(
            spec["scaleToZero"],
            json!({"activationRule": "arrivals", "activationThreshold": 0.5, "idleSeconds": 600})
        );
        assert!(i.notes.iter().any(|n| n.contains("`cpu` trigger")), "{:?}", i.notes);
    }

    #[test]
    fn what_cannot_convert_is_an_error_saying_why() {
        let e = import_text("apiVersion: v1\nkind: ConfigMap\n").unwrap_err();
        assert!(e.contains("neither an autoscaling/v2 HorizontalPodAutoscaler nor a KEDA ScaledObject"), "{e}");
        let cpu_only = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: c}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: d}\n  maxReplicas: 3\n  metrics:\n  - type: Resource\n    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}\n";
        let e = import_text(cpu_only).unwrap_err();
        assert!(e.contains("no metric converts") && e.contains("`cpu`"), "{e}");
        let e = import_text("apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\n").unwrap_err();
        assert!(e.contains("only autoscaling/v2"), "{e}");
        assert_eq!(quantity(&json!("1.5k")), Ok(1500.0));
        assert_eq!(quantity(&json!("250m")), Ok(0.25));
        assert!(quantity(&json!("5x")).is_err());
    }
}
