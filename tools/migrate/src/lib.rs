//! migrate: Apply dbmate-compatible SQL migrations safely.

use clap::Parser;
use opskit::cli::{ToolArgs, Verbosity};
use opskit::{Emitter, Error, Exit};

/// Apply dbmate-compatible SQL migrations safely.
#[derive(Debug, Parser)]
#[command(name = "migrate", version)]
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
    Err(Error::failure("migrate is not implemented yet (issue 6)"))
}
