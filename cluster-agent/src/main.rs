fn main() -> std::process::ExitCode {
    cluster_agent::cli::main()
}
