//! `vllm-autoscaler crd`: prints the `vLLMScalingPolicy` CustomResourceDefinition.

use std::process::ExitCode;

/// Arguments of `crd`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Print JSON instead of YAML.
    #[arg(long)]
    json: bool,
}

/// Prints the CRD generated from the policy types (the committed `deploy/crd.yaml` is this
/// output; a test fails when they drift apart).
pub(crate) fn run(args: Args) -> ExitCode {
    let text = if args.json {
        serde_json::to_string_pretty(&vllm_scaling_kube::crd())
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| e.to_string())
    } else {
        vllm_scaling_kube::crd_yaml().map_err(|e| e.to_string())
    };
    match text {
        Ok(t) => {
            print!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vllm-autoscaler crd: cannot serialize the CRD: {e}");
            ExitCode::from(1)
        }
    }
}
