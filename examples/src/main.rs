//! `vllm-autoscaler`: the reference binary of vllm-scaling.
//!
//! Each subcommand lives in its own module under `cmd/`; the conventions they share
//! (durations, the environment prefix) are in `cli`.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod cli;
mod cmd;

/// Autoscaling for vLLM inference servers.
#[derive(Parser, Debug)]
#[command(
    name = "vllm-autoscaler",
    version,
    about,
    long_about = None,
    after_help = "Conventions:\n  Times take a unit: 500ms, 15s, 1m, 1h30m (a plain number keeps the flag's old unit: seconds, unless its help says milliseconds or days).\n  Flags read from the environment use VLLM_AUTOSCALER_<FLAG> (e.g. VLLM_AUTOSCALER_PROMETHEUS_URL).\n  Machine-readable output (--json, replay, simulate's report.json) is JSON with camelCase keys.\n\nExamples:\n  vllm-autoscaler validate policy.yaml\n  vllm-autoscaler observe policy.yaml --pods http://127.0.0.1:8000/metrics\n  vllm-autoscaler run --prometheus-url http://prometheus:9090\n  vllm-autoscaler completions bash > /etc/bash_completion.d/vllm-autoscaler"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate vLLMScalingPolicy files (YAML or JSON), directories or stdin, as the API server would.
    #[command(
        after_help = "Examples:\n  vllm-autoscaler validate examples/policies/example-policy.yaml\n  vllm-autoscaler validate examples/policies/\n  kubectl get vsp -A -o yaml | vllm-autoscaler validate -"
    )]
    Validate(cmd::validate::Args),
    /// Convert an autoscaling/v2 HorizontalPodAutoscaler or a KEDA ScaledObject into a vLLMScalingPolicy.
    #[command(
        after_help = "Examples:\n  vllm-autoscaler import hpa.yaml > policy.yaml\n  kubectl get hpa vllm -o yaml | vllm-autoscaler import -"
    )]
    Import(cmd::import::Args),
    /// Replay a what-if scenario through the engine: one JSON line per step.
    #[command(
        after_help = "Examples:\n  vllm-autoscaler replay examples/scenarios/queue-burst.yaml\n  cat scenario.yaml | vllm-autoscaler replay -"
    )]
    Replay(cmd::replay::Args),
    /// Show what the autoscaler sees now: each rule's value per pod and for the fleet, its source and age, or why it is missing.
    #[command(
        after_help = "Examples:\n  vllm-autoscaler observe policy.yaml --pods http://10.0.0.7:8000/metrics --pods vllm-1=http://10.0.0.8:8000/metrics\n  vllm-autoscaler observe policy.yaml --pods http://a:8000/metrics,http://b:8000/metrics --interval 500ms\n  VLLM_AUTOSCALER_PROMETHEUS_URL=http://prometheus:9090 vllm-autoscaler observe policy.yaml --json --replicas 2\n\nThe policy file comes first; --pods takes one URL per occurrence (or a comma-separated list)."
    )]
    Observe(Box<cmd::observe::Args>),
    /// Serve a realistic, changing vLLM /metrics page (load settable with POST /control).
    #[command(
        after_help = "Examples:\n  vllm-autoscaler emulate-vllm --listen 127.0.0.1:8000 --load 4\n  vllm-autoscaler emulate-vllm --listen 127.0.0.1:8000 --replicas 3 --v0-names"
    )]
    EmulateVllm(cmd::emulate_vllm::Args),
    /// Compare scaling policies on a trace-driven simulation of a vLLM fleet.
    #[command(
        after_help = "Examples:\n  vllm-autoscaler simulate --out sim-out\n  vllm-autoscaler simulate --trace trace.csv --cold-start 30s,1m,2m --policy vllm-scaling,hpa-queue"
    )]
    Simulate(Box<cmd::simulate::Args>),
    /// Fit a replica profile to a `vllm bench serve` sweep (or, with --synthesize, write one for a profile).
    #[command(
        after_help = "Examples:\n  vllm-autoscaler calibrate sweep/*.json --base-profile h100-80gb-llama3-8b --name my-h100 --out my-h100.yaml\n  vllm-autoscaler calibrate --synthesize --profile a100-80gb-llama3-8b --rates 1,4,16,inf --out-dir sweep\n  vllm-autoscaler calibrate sweep/*.json --compare-to a100-80gb-llama3-8b"
    )]
    Calibrate(Box<cmd::calibrate::Args>),
    /// Serve this node's GPU metrics (DCGM names, from NVML) and its vLLM pods' metrics on /metrics.
    #[command(
        after_help = "Examples:\n  vllm-autoscaler gpu-exporter --listen 0.0.0.0:9400 --window 30s\n  VLLM_AUTOSCALER_NODE_NAME=node-1 vllm-autoscaler gpu-exporter --vllm-selector app=vllm"
    )]
    GpuExporter(Box<cmd::gpu_exporter::Args>),
    /// Print the vLLMScalingPolicy CustomResourceDefinition (YAML).
    #[command(
        after_help = "Examples:\n  vllm-autoscaler crd | kubectl apply --server-side -f -\n  vllm-autoscaler crd --json"
    )]
    Crd(cmd::crd::Args),
    /// Run the Kubernetes controller: evaluate every vLLMScalingPolicy and scale through /scale.
    #[command(
        after_help = "Examples:\n  vllm-autoscaler run --kubeconfig ~/.kube/config --dry-run\n  vllm-autoscaler run --prometheus-url http://prometheus:9090 --sync-period 30s --leader-elect"
    )]
    Run(Box<cmd::run::Args>),
    /// Serve KEDA's external scaler protocol (gRPC): KEDA's HPA applies the engine's decisions.
    #[command(
        after_help = "Examples:\n  vllm-autoscaler keda-scaler --listen 0.0.0.0:9443 --tls-cert-file tls.crt --tls-key-file tls.key\n  vllm-autoscaler keda-scaler --listen 127.0.0.1:9443 --insecure-no-tls --kubeconfig ~/.kube/config\n\nA ScaledObject's trigger (type external-push) names a policy: metadata: {scalerAddress: HOST:9443, policy: NAME}."
    )]
    KedaScaler(Box<cmd::keda_scaler::Args>),
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    #[command(
        after_help = "Examples:\n  vllm-autoscaler completions bash > ~/.local/share/bash-completion/completions/vllm-autoscaler\n  vllm-autoscaler completions zsh > \"${fpath[1]}/_vllm-autoscaler\"\n  vllm-autoscaler completions fish > ~/.config/fish/completions/vllm-autoscaler.fish"
    )]
    Completions(CompletionsArgs),
}

/// Arguments of `completions`.
#[derive(clap::Args, Debug)]
struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => cmd::validate::run(args),
        Command::Import(args) => cmd::import::run(args),
        Command::Replay(args) => cmd::replay::run(args),
        Command::Observe(args) => cmd::observe::run(*args),
        Command::EmulateVllm(args) => cmd::emulate_vllm::run(args),
        Command::Simulate(args) => cmd::simulate::run(*args),
        Command::Calibrate(args) => cmd::calibrate::run(*args),
        Command::GpuExporter(args) => cmd::gpu_exporter::run(*args),
        Command::Crd(args) => cmd::crd::run(args),
        Command::Run(args) => cmd::run::run(*args),
        Command::KedaScaler(args) => cmd::keda_scaler::run(*args),
        Command::Completions(args) => completions(args.shell),
    }
}

/// Prints the completion script; a reader that went away (`| head`) is not an error.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "vllm-autoscaler", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vllm-autoscaler completions: writing to standard output failed: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;
    use crate::cli::ENV_PREFIX;

    /// Every flag read from the environment reads `VLLM_AUTOSCALER_<FLAG>`.
    #[test]
    fn every_env_var_has_the_prefix_and_the_flags_name() {
        let cli = Cli::command();
        let mut seen = 0;
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let Some(env) = arg.get_env() else { continue };
                let long = arg.get_long().expect("env-backed flags are long flags");
                let expected = format!("{ENV_PREFIX}{}", long.replace('-', "_").to_uppercase());
                assert_eq!(env.to_str(), Some(expected.as_str()), "{} --{long}", sub.get_name());
                seen += 1;
            }
        }
        assert!(seen >= 6, "only {seen} env-backed flags found");
    }

    /// Every subcommand's help ends with examples.
    #[test]
    fn every_subcommand_has_examples() {
        let cli = Cli::command();
        assert!(cli.get_after_help().is_some_and(|h| h.to_string().contains("Examples:")));
        for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
            let help = sub.get_after_help().map(ToString::to_string).unwrap_or_default();
            assert!(help.contains(&format!("vllm-autoscaler {}", sub.get_name())), "{}: {help:?}", sub.get_name());
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
