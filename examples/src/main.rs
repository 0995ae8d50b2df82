//! `vllm-autoscaler`: the reference binary of vllm-scaling.
//!
//! Each subcommand lives in its own module under `cmd/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Autoscaling for vLLM inference servers.
#[derive(Parser, Debug)]
#[command(name = "vllm-autoscaler", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate vLLMScalingPolicy files (YAML or JSON), directories or stdin, as the API server would.
    Validate(cmd::validate::Args),
    /// Convert an autoscaling/v2 HorizontalPodAutoscaler or a KEDA ScaledObject into a vLLMScalingPolicy.
    Import(cmd::import::Args),
    /// Replay a what-if scenario through the engine: one JSON line per step.
    Replay(cmd::replay::Args),
    /// Show what the autoscaler sees now: each rule's value per pod and for the fleet, its source and age, or why it is missing.
    Observe(Box<cmd::observe::Args>),
    /// Serve a realistic, changing vLLM /metrics page (load settable with POST /control).
    EmulateVllm(cmd::emulate_vllm::Args),
    /// Compare scaling policies on a trace-driven simulation of a vLLM fleet.
    Simulate(Box<cmd::simulate::Args>),
    /// Serve this node's GPU metrics (DCGM names, from NVML) and its vLLM pods' metrics on /metrics.
    GpuExporter(Box<cmd::gpu_exporter::Args>),
    /// Print the vLLMScalingPolicy CustomResourceDefinition (YAML).
    Crd(cmd::crd::Args),
    /// Run the Kubernetes controller: evaluate every vLLMScalingPolicy and scale through /scale.
    Run(Box<cmd::run::Args>),
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
        Command::GpuExporter(args) => cmd::gpu_exporter::run(*args),
        Command::Crd(args) => cmd::crd::run(args),
        Command::Run(args) => cmd::run::run(*args),
    }
}
