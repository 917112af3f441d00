//! logrotate-lite: Rotate logs the way logrotate does, crash-safe.

use clap::Parser;
use opskit::cli::{ToolArgs, Verbosity};
use opskit::{Emitter, Error, Exit};

/// Rotate logs the way logrotate does, crash-safe.
#[derive(Debug, Parser)]
#[command(name = "logrotate-lite", version)]
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
        "logrotate-lite is not implemented yet (issue 8)",
    ))
}
