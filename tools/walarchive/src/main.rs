fn main() -> std::process::ExitCode {
    opskit::cli::main("walarchive", opskit::Exit::Usage, walarchive::run)
}
