fn main() -> std::process::ExitCode {
    opskit::cli::main("logrotate-lite", opskit::Exit::Usage, logrotate_lite::run)
}
