fn main() -> std::process::ExitCode {
    opskit::cli::main("verify-backup", opskit::Exit::Usage, verify_backup::run)
}
