fn main() -> std::process::ExitCode {
    opskit::cli::main("offsite", opskit::Exit::Usage, offsite::run)
}
