//! prune: Apply a retention policy to backup sets.

use clap::Parser;
use opskit::cli::{ToolArgs, Verbosity};
use opskit::{Emitter, Error, Exit};

/// Apply a retention policy to backup sets.
#[derive(Debug, Parser)]
#[command(name = "prune", version)]
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
    Err(Error::failure("prune is not implemented yet (issue 5)"))
}
