//! healthcheck: Run health checks with monitoring-plugins exit codes.

use clap::Parser;
use opskit::cli::{ToolArgs, Verbosity};
use opskit::{Emitter, Error, Exit};

/// Run health checks with monitoring-plugins exit codes.
#[derive(Debug, Parser)]
#[command(name = "healthcheck", version)]
pub struct Args {
    #[command(flatten)]
    pub verbosity: Verbosity,
}

impl ToolArgs for Args {
    fn verbosity(&self) -> &Verbosity {
        &self.verbosity
    }
}

/// Run the tool.
pub fn run(_args: Args, _em: &mut Emitter) -> Result<Exit, Error> {
    Err(Error::failure(
        "healthcheck is not implemented yet (issue 7)",
    ))
}
