//! `vllm-autoscaler keda-scaler`: KEDA's external scaler (gRPC) over the controller's
//! decisions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `keda-scaler`: the controller's, plus the gRPC listener's.
#[derive(clap::Args, Debug)]
#[group(id = "keda_scaler")]
pub(crate) struct Args {
    /// Where KEDA connects (a trigger's `scalerAddress`).
    #[arg(long, default_value = "0.0.0.0:9443", env = "VLLM_AUTOSCALER_LISTEN")]
    listen: SocketAddr,
    /// PEM certificate chain of the gRPC listener (KEDA checks it against `caCert`).
    #[arg(
        long,
        env = "VLLM_AUTOSCALER_TLS_CERT_FILE",
        required_unless_present = "insecure_no_tls",
        requires = "tls_key_file"
    )]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of the gRPC listener.
    #[arg(long, env = "VLLM_AUTOSCALER_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (KEDA's `tlsClientCert`).
    #[arg(long, env = "VLLM_AUTOSCALER_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    tls_client_ca_file: Option<PathBuf>,
    /// Serve gRPC in plaintext, without TLS (for a local try-out; never the default).
    #[arg(long, conflicts_with_all = ["tls_cert_file", "tls_key_file", "tls_client_ca_file"])]
    insecure_no_tls: bool,
    /// How often a policy at zero replicas (or wanting zero) is evaluated, so that a
    /// burst activates it without waiting a sync period or KEDA's polling interval.
    #[arg(long, default_value = "1s", value_parser = crate::cli::duration)]
    activation_period: Duration,
    #[command(flatten)]
    controller: super::run::Args,
}

/// Runs the scaler until SIGTERM or Ctrl-C.
pub(crate) fn run(args: Args) -> ExitCode {
    if args.controller.leader_elect {
        eprintln!(
            "vllm-autoscaler keda-scaler: --leader-elect is not supported: run one replica (KEDA calls one scaler address, and a standby would have no decisions to answer with)"
        );
        return ExitCode::from(2);
    }
    if args.controller.dry_run {
        eprintln!(
            "vllm-autoscaler keda-scaler: --dry-run does not apply: the scaler never writes /scale (KEDA's HPA does); use `mode: observe` in the policy to have it answer the current replicas"
        );
        return ExitCode::from(2);
    }
    let tls = match (args.tls_cert_file, args.tls_key_file) {
        (Some(cert), Some(key)) => Some(vllm_scaling_keda::TlsFiles { cert, key, client_ca: args.tls_client_ca_file }),
        _ => None,
    };
    let keda = super::run::Keda { listen: args.listen, tls, activation_period: args.activation_period };
    super::run::run_with(args.controller, Some(keda))
}
