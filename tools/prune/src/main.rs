fn main() -> std::process::ExitCode {
    opskit::cli::main("prune", opskit::Exit::Usage, prune::run)
}
