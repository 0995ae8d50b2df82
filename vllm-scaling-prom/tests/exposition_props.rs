//! Property tests: generated pages (names, escaped label values, special values,
//! timestamps, comments, blank lines, CRLF) parse back to exactly what was generated, and
//! any single-byte corruption of a valid page is either still a page or an error that names
//! a real line — never a panic.

use proptest::prelude::*;
use vllm_scaling_prom::exposition::parse;

#[derive(Clone, Debug)]
struct GenSample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    timestamp: Option<i64>,
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}"
}

fn label_value() -> impl Strategy<Value = String> {
    // Quotes, backslashes, newlines and non-ASCII must survive escaping.
    proptest::collection::vec(
        prop_oneof![
            Just('"'),
            Just('\\'),
            Just('\n'),
            Just('é'),
            Just(' '),
            Just('{'),
            any::<char>().prop_filter("no CR", |c| *c != '\r')
        ],
        0..12,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::NAN),
        Just(0.0),
        Just(-0.0),
        any::<f64>(),
        -1e6..1e6f64
    ]
}

fn sample() -> impl Strategy<Value = GenSample> {
    (
        name(),
        proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", label_value(), 0..5),
        value(),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(|(name, labels, value, timestamp)| GenSample {
            name,
            labels: labels.into_iter().collect(),
            value,
            timestamp,
        })
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn render(samples: &[GenSample], crlf: bool, noise: &[u8]) -> String {
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut out = String::new();
    for (i, s) in samples.iter().enumerate() {
        match noise.get(i).copied().unwrap_or(0) % 4 {
            1 => out.push_str(&format!("# HELP {} some help \\n text{nl}", s.name)),
            2 => out.push_str(&format!("{nl}   {nl}")),
            3 => out.push_str(&format!("# a comment {{not=\"a sample\"}}{nl}")),
            _ => {}
        }
        out.push_str(&s.name);
        if !s.labels.is_empty() {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            out.push('{');
            out.push_str(&labels.join(", "));
            out.push('}');
        }
        let v = match s.value {
            v if v.is_nan() => "NaN".to_owned(),
            v if v == f64::INFINITY => "+Inf".to_owned(),
            v if v == f64::NEG_INFINITY => "-Inf".to_owned(),
            v => format!("{v:e}"),
        };
        out.push_str(&format!(" {v}"));
        if let Some(ts) = s.timestamp {
            out.push_str(&format!(" {ts}"));
        }
        out.push_str(nl);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn generated_pages_parse_back_exactly(
        samples in proptest::collection::vec(sample(), 0..20),
        crlf in any::<bool>(),
        noise in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let page = render(&samples, crlf, &noise);
        let parsed = parse(&page).map_err(|e| TestCaseError::fail(format!("{e}\n{page}")))?;
        prop_assert_eq!(parsed.len(), samples.len());
        for (got, want) in parsed.samples().zip(&samples) {
            prop_assert_eq!(got.name, want.name.as_str());
            let labels: Vec<(String, String)> = got.labels.iter().map(|l| (l.name.to_string(), l.value.to_string())).collect();
            prop_assert_eq!(&labels, &want.labels);
            prop_assert!(got.value.to_bits() == want.value.to_bits() || (got.value.is_nan() && want.value.is_nan()));
            prop_assert_eq!(got.timestamp, want.timestamp.map(|t| t as f64));
        }
    }

    #[test]
    fn corrupted_pages_never_panic(
        samples in proptest::collection::vec(sample(), 1..8),
        at in any::<prop::sample::Index>(),
        byte in prop_oneof![Just(b'"'), Just(b'{'), Just(b'}'), Just(b','), Just(b'='), Just(b'\\'), Just(b' '), Just(b'\n'), Just(b'#'), any::<u8>()],
    ) {
        let page = render(&samples, false, &[]);
        let mut bytes = page.into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(text) = std::str::from_utf8(&bytes) {
            vllm_scaling_prom::fuzzing::exposition_parse(text.as_bytes());
            if let Err(e) = parse(text) {
                prop_assert!(e.line >= 1 && e.line <= text.split('\n').count());
            }
        }
    }
}
