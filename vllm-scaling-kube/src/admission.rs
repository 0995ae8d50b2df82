//! What the API server checks when a `vLLMScalingPolicy` is written, evaluated in-process
//! from the generated CRD ([`crate::crd`]): the structural OpenAPI schema (types, `enum`,
//! `minimum`/`maximum`, `minItems`/`maxItems`, `maxLength`, `pattern`, `required`, unknown
//! fields as `kubectl apply`'s strict field validation reports them), the defaults it
//! writes, and (feature `admission`) its CEL `x-kubernetes-validations`.
//!
//! `vllm-autoscaler validate` uses the schema check to report every structural problem of
//! a document at once; the fake API server (`test-util`) admits writes with [`admit`];
//! the tests hold `validate` and this admission to the same verdict on every policy the
//! project ships.

use std::fmt;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

/// One problem the API server would report: the field path and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaViolation {
    /// The field path, `spec.scalingRules[0].threshold` (`(document)` for the root).
    pub path: String,
    /// Why the value is refused, in the policy author's terms.
    pub reason: String,
    /// For an unknown field or an unknown enum value: the closest known one.
    pub did_you_mean: Option<String>,
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// The CRD's `openAPIV3Schema` (generated once).
#[must_use]
pub fn policy_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::to_value(crate::crd())
            .ok()
            .and_then(|crd| crd.pointer("/spec/versions/0/schema/openAPIV3Schema").cloned())
            .unwrap_or(Value::Null)
    })
}

/// Writes the schema's defaults into absent fields of `object`, as the API server does
/// before it validates and stores an object.
pub fn apply_defaults(object: &mut Value) {
    default_node(policy_schema(), object);
}

fn default_node(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else { return };
            for (key, prop) in props {
                match map.get_mut(key) {
                    // The API server drops a null in a non-nullable field, then defaults it.
                    Some(Value::Null) if prop.get("nullable") != Some(&json!(true)) => {
                        map.remove(key);
                        if let Some(d) = prop.get("default") {
                            map.insert(key.clone(), d.clone());
                        }
                    }
                    Some(v) => default_node(prop, v),
                    None => {
                        if let Some(d) = prop.get("default") {
                            map.insert(key.clone(), d.clone());
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    default_node(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// Checks `object` (a whole `vLLMScalingPolicy`) against the structural schema: every
/// problem, in document order. Apply [`apply_defaults`] first to check what the API server
/// checks.
#[must_use]
pub fn check_schema(object: &Value) -> Vec<SchemaViolation> {
    let mut out = Vec::new();
    check_node(policy_schema(), object, &mut Vec::new(), &mut out);
    out
}

/// A path under construction: field names and list indices.
type Path = Vec<Seg>;

#[derive(Clone, Debug)]
enum Seg {
    Field(String),
    Index(usize),
}

fn show(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Field(f) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(f);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    if s.is_empty() { "(document)".to_owned() } else { s }
}

/// A value as a policy author reads it: `the text "two"`, `the number 1.5`, `a list`.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing (null)".to_owned(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the text {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    }
}

/// The expected type in the policy author's terms.
fn expected(ty: &str, format: Option<&str>) -> &'static str {
    match (ty, format) {
        ("object", _) => "a mapping (`field: value` pairs)",
        ("array", _) => "a list",
        ("string", Some("date-time")) => "a time (RFC 3339 text)",
        ("string", _) => "text",
        ("integer", _) => "a whole number",
        ("number", _) => "a number",
        ("boolean", _) => "true or false",
        _ => "a value",
    }
}

/// The closest of `known` to `given`, when close enough to be a typo: within an edit
/// distance of a third of the name (at least 2), or one a prefix of the other.
#[must_use]
pub fn closest<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let given_lower = given.to_ascii_lowercase();
    known
        .into_iter()
        .filter_map(|k| {
            let k_lower = k.to_ascii_lowercase();
            let d = strsim::damerau_levenshtein(&given_lower, &k_lower);
            let prefix =
                given_lower.len() >= 3 && (k_lower.starts_with(&given_lower) || given_lower.starts_with(&k_lower));
            (d <= (given.len() / 3).max(2) || prefix).then_some((d, k))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn push(out: &mut Vec<SchemaViolation>, path: &[Seg], reason: String, did_you_mean: Option<String>) {
    out.push(SchemaViolation { path: show(path), reason, did_you_mean });
}

fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { format!("{n}") }
}

#[allow(clippy::too_many_lines)]
fn check_node(schema: &Value, value: &Value, path: &mut Path, out: &mut Vec<SchemaViolation>) {
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if value.is_null() {
        if schema.get("nullable") != Some(&json!(true)) && !preserve {
            push(out, path, "must not be null (leave the field out instead)".to_owned(), None);
        }
        return;
    }
    let Some(ty) = schema.get("type").and_then(Value::as_str) else { return };
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
        let format = schema.get("format").and_then(Value::as_str);
        push(out, path, format!("expected {}, got {}", expected(ty, format), describe(value)), None);
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let names: Vec<&str> = options.iter().filter_map(Value::as_str).collect();
        let given = value.as_str().unwrap_or_default();
        let suggestion = closest(given, names.iter().copied()).map(str::to_owned);
        let hint = suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
        push(out, path, format!("{} is not one of {}{hint}", describe(value), names.join(", ")), suggestion);
    }
    if let Some(n) = value.as_f64() {
        let flag = |key: &str| schema.get(key) == Some(&json!(true));
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if flag("exclusiveMinimum") && n <= min {
                push(out, path, format!("must be greater than {}, got {}", number_text(min), number_text(n)), None);
            } else if n < min {
                push(out, path, format!("must be at least {}, got {}", number_text(min), number_text(n)), None);
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if flag("exclusiveMaximum") && n >= max {
                push(out, path, format!("must be less than {}, got {}", number_text(max), number_text(n)), None);
            } else if n > max {
                push(out, path, format!("must be at most {}, got {}", number_text(max), number_text(n)), None);
            }
        }
    }
    match value {
        Value::String(s) => {
            let chars = s.chars().count();
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && chars as u64 > max
            {
                push(out, path, format!("must be at most {max} characters, got {chars}"), None);
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
                && !pattern_matches(pattern, s)
            {
                let reason = if pattern == "\\S" {
                    "must not be empty".to_owned()
                } else {
                    format!("{} does not match the pattern `{pattern}`", describe(value))
                };
                push(out, path, reason, None);
            }
        }
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            for req in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                let Some(req) = req.as_str() else { continue };
                if !map.contains_key(req) {
                    path.push(Seg::Field(req.to_owned()));
                    push(out, path, "is required".to_owned(), None);
                    path.pop();
                }
            }
            for (k, v) in map {
                path.push(Seg::Field(k.clone()));
                match props.and_then(|p| p.get(k)) {
                    Some(s) => check_node(s, v, path, out),
                    None if path.len() == 1 && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) => {}
                    None if !preserve => {
                        let known: Vec<&str> = props.into_iter().flat_map(Map::keys).map(String::as_str).collect();
                        let suggestion = closest(k, known.iter().copied()).map(str::to_owned);
                        let hint = match &suggestion {
                            Some(s) => format!("; did you mean `{s}`?"),
                            None => format!("; the fields here are {}", known.join(", ")),
                        };
                        push(out, path, format!("unknown field `{k}`{hint}"), suggestion);
                    }
                    None => {}
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && n < min
            {
                let noun = if min == 1 { "item" } else { "items" };
                push(out, path, format!("must hold at least {min} {noun}, got {n}"), None);
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && n > max
            {
                // Like the API server, the items of a list over its bound are not checked one by one.
                push(out, path, format!("must hold at most {max} items, got {n}"), None);
                return;
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    check_node(item_schema, item, path, out);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

/// `pattern` as the API server reads it: an unanchored regular expression.
fn pattern_matches(pattern: &str, text: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let re = cache.entry(pattern.to_owned()).or_insert_with(|| regex::Regex::new(pattern).ok());
    // A pattern that does not compile is the schema's bug, and the generated schema has none
    // (a test compiles each); it matches nothing, so the bug cannot go unnoticed.
    re.as_ref().is_some_and(|re| re.is_match(text))
}

#[cfg(feature = "admission")]
pub use cel_rules::{admit, admit_write, check_rules};

#[cfg(feature = "admission")]
mod cel_rules {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};

    use serde_json::{Value, json};

    use super::{Path, SchemaViolation, Seg, apply_defaults, check_schema, policy_schema, push};

    /// Evaluates every CEL `x-kubernetes-validations` rule of the schema on `object` (with
    /// its defaults applied, as the API server evaluates them): the violations, with the
    /// rule's `fieldPath` appended to the node's path. A rule that fails to compile or to
    /// evaluate is a violation too (the API server would refuse the CRD or the write).
    #[must_use]
    pub fn check_rules(object: &Value) -> Vec<SchemaViolation> {
        let mut out = Vec::new();
        walk(policy_schema(), object, &mut Vec::new(), &mut out);
        out
    }

    /// Admits a write as the API server does: writes the defaults into `object`, then
    /// checks the schema and, when it passes, the CEL rules.
    ///
    /// # Errors
    /// Every violation found.
    pub fn admit(object: &mut Value) -> Result<(), Vec<SchemaViolation>> {
        apply_defaults(object);
        let structural = check_schema(object);
        if !structural.is_empty() {
            return Err(structural);
        }
        let rules = check_rules(object);
        if rules.is_empty() { Ok(()) } else { Err(rules) }
    }

    /// [`admit`] for a write of any kind the fake API server serves: objects of other kinds
    /// pass untouched; a refused policy gets the API server's message
    /// (`vLLMScalingPolicy.autoscaler.production-stack "NAME" is invalid: ...`).
    ///
    /// # Errors
    /// The message of the 422 `Invalid` answer.
    pub fn admit_write(api_version: &str, kind: &str, object: &mut Value) -> Result<(), String> {
        let ours = format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION);
        if api_version != ours || kind != "vLLMScalingPolicy" {
            return Ok(());
        }
        admit(object).map_err(|violations| {
            let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            let all: Vec<String> = violations.iter().map(ToString::to_string).collect();
            format!("{kind}.{} {name:?} is invalid: {}", crate::crd::GROUP, all.join("; "))
        })
    }

    fn walk(schema: &Value, value: &Value, path: &mut Path, out: &mut Vec<SchemaViolation>) {
        if value.is_null() {
            return;
        }
        for rule in schema.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
            let expression = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
            let message = rule.get("message").and_then(Value::as_str).unwrap_or("failed rule");
            let field = rule.get("fieldPath").and_then(Value::as_str).unwrap_or_default();
            let verdict = evaluate(expression, to_cel(schema, value));
            let reason = match verdict {
                Ok(true) => continue,
                Ok(false) => message.to_owned(),
                Err(e) => format!("the rule `{expression}` could not be evaluated: {e}"),
            };
            let mut at = path.clone();
            for part in field.split('.').filter(|p| !p.is_empty()) {
                at.push(Seg::Field(part.to_owned()));
            }
            push(out, &at, reason, None);
        }
        match value {
            Value::Object(map) => {
                let Some(props) = schema.get("properties").and_then(Value::as_object) else { return };
                for (k, v) in map {
                    if let Some(s) = props.get(k) {
                        path.push(Seg::Field(k.clone()));
                        walk(s, v, path, out);
                        path.pop();
                    }
                }
            }
            Value::Array(items) => {
                let Some(item_schema) = schema.get("items") else { return };
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    walk(item_schema, item, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    /// The value as CEL sees it in the API server: typed by the schema (a `number` field is
    /// a double even when written `75`), untyped nodes as their JSON (integers as int).
    fn to_cel(schema: &Value, value: &Value) -> cel::Value {
        let ty = schema.get("type").and_then(Value::as_str);
        match value {
            Value::Null => cel::Value::Null,
            Value::Bool(b) => cel::Value::Bool(*b),
            Value::Number(n) => match (ty, n.as_i64()) {
                (Some("number"), _) | (_, None) => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
                (_, Some(i)) => cel::Value::Int(i),
            },
            Value::String(s) => cel::Value::String(Arc::new(s.clone())),
            Value::Array(items) => {
                let item_schema = schema.get("items").cloned().unwrap_or(json!({}));
                cel::Value::List(Arc::new(items.iter().map(|v| to_cel(&item_schema, v)).collect()))
            }
            Value::Object(map) => {
                let empty = json!({});
                let props = schema.get("properties");
                let entries: HashMap<String, cel::Value> = map
                    .iter()
                    .filter(|(_, v)| !v.is_null() || ty.is_none())
                    .map(|(k, v)| (k.clone(), to_cel(props.and_then(|p| p.get(k)).unwrap_or(&empty), v)))
                    .collect();
                cel::Value::from(entries)
            }
        }
    }

    /// Compiles (once per expression) and runs one rule with `self` bound.
    fn evaluate(expression: &str, this: cel::Value) -> Result<bool, String> {
        type Programs = Mutex<HashMap<String, Result<Arc<cel::Program>, String>>>;
        static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
        static PROGRAMS: OnceLock<Programs> = OnceLock::new();
        let env = ENV.get_or_init(|| {
            let mut env = cel::Env::stdlib();
            // Kubernetes' CEL environment includes the strings extension (`substring`, ...).
            let _ = env.add_extension(cel::extensions::strings);
            Arc::new(env)
        });
        let program = {
            let programs = PROGRAMS.get_or_init(Default::default);
            let mut programs = programs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            programs
                .entry(expression.to_owned())
                .or_insert_with(|| env.compile(expression).map(Arc::new).map_err(|e| e.to_string()))
                .clone()?
        };
        let mut context = cel::Context::with_env(Arc::clone(env));
        context.add_variable_from_value("self", this);
        match program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("it returned {other:?}, not a boolean")),
            Err(e) => Err(e.to_string()),
        }
    }
}
