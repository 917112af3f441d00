//! verify-backup: Prove a backup set is whole and restores.

use clap::Parser;
use opskit::cli::{ToolArgs, Verbosity};
use opskit::{Emitter, Error, Exit};

/// Prove a backup set is whole and restores.
#[derive(Debug, Parser)]
#[command(name = "verify-backup", version)]
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
        "verify-backup is not implemented yet (issue 4)",
    ))
}
