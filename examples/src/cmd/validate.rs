//! `vllm-autoscaler validate FILE...`

use std::path::PathBuf;
use std::process::ExitCode;

use vllm_scaling_core::parse_policies;

/// Arguments of `validate`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Policy files (YAML, possibly with several `---` documents, or JSON).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Validates every file; exit 0 when all are valid, 1 with every error otherwise.
pub(crate) fn run(args: Args) -> ExitCode {
    let mut failed = false;
    for file in &args.files {
        let shown = file.display();
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{shown}: cannot read: {e}");
                failed = true;
                continue;
            }
        };
        let results = parse_policies(&text);
        let many = results.len() > 1;
        for (i, result) in results.into_iter().enumerate() {
            let doc = if many { format!("{shown}[{i}]") } else { shown.to_string() };
            match result {
                Ok((policy, _)) => {
                    let name = policy.metadata.name.as_deref().unwrap_or("(unnamed)");
                    println!("{doc}: ok ({name})");
                }
                Err(errors) => {
                    failed = true;
                    for e in errors.0 {
                        eprintln!("{doc}:{}: {}", e.path, e.reason);
                    }
                }
            }
        }
    }
    if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
}
