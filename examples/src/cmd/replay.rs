//! `vllm-autoscaler replay SCENARIO`

use std::io::Write as _;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;

use vllm_scaling_core::Scenario;

/// Arguments of `replay`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The scenario file (YAML or JSON); `-` reads standard input.
    scenario: PathBuf,
}

/// Prints one JSON line per step; exit 1 when a step's `expect` is not met, 2 on a
/// malformed scenario.
pub(crate) fn run(args: Args) -> ExitCode {
    let shown = args.scenario.display().to_string();
    let text = if shown == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
            eprintln!("-: cannot read standard input: {e}");
            return ExitCode::from(2);
        }
        s
    } else {
        match std::fs::read_to_string(&args.scenario) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{shown}: cannot read: {e}");
                return ExitCode::from(2);
            }
        }
    };
    // Each step is evaluated and printed as it is read: memory stays bounded by one step
    // however many steps there are (the whole scenario is checked first, so a malformed
    // one prints nothing).
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut unmet = 0usize;
    let mut failure: Option<String> = None;
    let streamed = Scenario::stream(&text, |i, _, line| {
        for m in &line.unmet_expectations {
            eprintln!("{shown}: steps[{i}]: {m}");
            unmet += 1;
        }
        let json = match serde_json::to_string(&line) {
            Ok(j) => j,
            Err(e) => {
                failure = Some(format!("cannot encode a decision: {e}"));
                return ControlFlow::Break(());
            }
        };
        if writeln!(out, "{json}").is_err() {
            // The reader went away (e.g. `| head`): not an error of ours.
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    if let Err(e) = streamed {
        eprintln!("{shown}: {e}");
        return ExitCode::from(2);
    }
    if let Some(why) = failure {
        eprintln!("{shown}: {why}");
        return ExitCode::from(2);
    }
    if unmet > 0 {
        eprintln!("{shown}: {unmet} expectation(s) not met");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
