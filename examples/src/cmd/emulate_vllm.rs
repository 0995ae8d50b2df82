//! `vllm-autoscaler emulate-vllm --listen ADDR [--model NAME] [--v0-names] [--load RPS]`

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use vllm_scaling_prom::emulator::{Emulator, EmulatorOptions, Load};

/// Arguments of `emulate-vllm`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Address to serve on; with `--replicas N`, replica i listens on port + i (port 0: any free ports).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// The served model name (`model_name` label).
    #[arg(long, default_value = "meta-llama/Llama-3.1-8B-Instruct")]
    model: String,
    /// Serve V0 metric names (gpu_cache_usage_perc, time_per_output_token_seconds, no engine label).
    #[arg(long)]
    v0_names: bool,
    /// Requests per second arriving at each replica (change it later with POST /control).
    #[arg(long, default_value_t = 0.0)]
    load: f64,
    /// Data-parallel engines per replica (V1 `engine` label).
    #[arg(long, default_value_t = 1)]
    engines: u32,
    /// Requests that run at once per replica; a replica serves max_batch / service-secs
    /// requests per second (32 with the defaults) before a queue builds.
    #[arg(long, default_value_t = 16.0)]
    max_batch: f64,
    /// Seconds a request holds a batch slot.
    #[arg(long, default_value_t = 0.5)]
    service_secs: f64,
    /// Generated tokens per request. The default, a short chat answer (60 ms to the first
    /// token, then 15 ms per token: about 0.55 s end to end when lightly loaded, twice that
    /// with the batch full), keeps an unloaded fleet under the seed example's
    /// `latency: 1000` rule, so only load makes it scale.
    #[arg(long, default_value_t = 32.0)]
    tokens_per_request: f64,
    /// How many replicas (emulated pods) to run.
    #[arg(long, default_value_t = 1)]
    replicas: u16,
}

/// Serves until Ctrl-C.
pub(crate) fn run(args: Args) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime") {
        Ok(rt) => match rt.block_on(serve(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("emulate-vllm: {e:#}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("emulate-vllm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.replicas >= 1, "--replicas must be at least 1");
    let mut emulators = Vec::new();
    for i in 0..args.replicas {
        let mut addr = args.listen;
        if addr.port() != 0 {
            let port = addr.port().checked_add(i).context("--listen port + --replicas overflows 65535")?;
            addr.set_port(port);
        }
        let options = EmulatorOptions {
            model_name: args.model.clone(),
            engines: args.engines,
            v0_names: args.v0_names,
            max_batch: args.max_batch,
            service_secs: args.service_secs,
            tokens_per_request: args.tokens_per_request,
            seed: u64::from(i) + 1,
            load: Load { request_rate: args.load, ..Load::default() },
            ..EmulatorOptions::default()
        };
        let emulator = Emulator::start(addr, options).await.with_context(|| format!("starting replica {i}"))?;
        // A closed stdout (the reader went away) must not stop the emulators.
        let _ = writeln!(
            std::io::stdout(),
            "replica {i}: {} (control: {}/control)",
            emulator.metrics_url(),
            emulator.url()
        );
        emulators.push(emulator);
    }
    let _ = writeln!(
        std::io::stdout(),
        "set the load with: curl -X POST {}/control -d '{{\"request_rate\": 60}}'   (Ctrl-C stops)",
        emulators[0].url()
    );
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    for e in emulators {
        e.shutdown().await;
    }
    Ok(())
}
