//! Logging of the long-running commands (`run`, `gpu-exporter`): `--log-format text|json`
//! (env `VLLM_AUTOSCALER_LOG_FORMAT`), level from `RUST_LOG` (default `info`), on stderr.
//! Text logs are coloured only when stderr is a terminal and `NO_COLOR` is unset, so a log
//! collector reading a pipe never gets ANSI escapes.

use std::io::IsTerminal as _;

/// The environment variable `--log-format` falls back to.
pub(crate) const LOG_FORMAT_ENV: &str = "VLLM_AUTOSCALER_LOG_FORMAT";

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`).
    Json,
}

/// Installs the global subscriber (once; later calls do nothing).
pub(crate) fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// An error and its causes on one line, without repeating a cause that the message
/// before it already quotes (kube's and std's errors often print their source
/// themselves, and anyhow's `{:#}` would print it again).
pub(crate) fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_quoted_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        #[derive(Debug)]
        struct Quoting(std::io::Error);
        impl std::fmt::Display for Quoting {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "failed to read kubeconfig: {}", self.0)
            }
        }
        impl std::error::Error for Quoting {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Quoting(io)).context("reading kubeconfig /nope");
        assert_eq!(format!("{e:#}").matches("No such file").count(), 2, "anyhow alone repeats it");
        assert_eq!(
            chain(&e),
            "reading kubeconfig /nope: failed to read kubeconfig: No such file or directory (os error 2)"
        );
    }
}
