fn main() -> std::process::ExitCode {
    opskit::cli::main("healthcheck", opskit::Exit::Unknown, healthcheck::run)
}
