fn main() -> std::process::ExitCode {
    opskit::cli::main("migrate", opskit::Exit::Usage, migrate::run)
}
