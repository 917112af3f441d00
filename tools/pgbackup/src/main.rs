fn main() -> std::process::ExitCode {
    opskit::cli::main("pgbackup", opskit::Exit::Usage, pgbackup::run)
}
