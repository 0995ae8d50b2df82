//! One module per subcommand.

pub(crate) mod replay;
pub(crate) mod validate;
