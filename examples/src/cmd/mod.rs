//! One module per subcommand.

pub(crate) mod calibrate;
pub(crate) mod crd;
pub(crate) mod emulate_vllm;
pub(crate) mod gpu_exporter;
pub(crate) mod import;
pub(crate) mod keda_scaler;
pub(crate) mod locate;
pub(crate) mod logs;
pub(crate) mod observe;
pub(crate) mod replay;
pub(crate) mod run;
pub(crate) mod simulate;
pub(crate) mod validate;
