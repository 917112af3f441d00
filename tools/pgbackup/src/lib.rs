//! pgbackup: Write a verified PostgreSQL backup set.

use clap::Parser;
use opskit::cli::{ToolArgs, Verbosity};
use opskit::{Emitter, Error, Exit};

/// Write a verified PostgreSQL backup set.
#[derive(Debug, Parser)]
#[command(name = "pgbackup", version)]
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
    Err(Error::failure("pgbackup is not implemented yet (issue 3)"))
}
