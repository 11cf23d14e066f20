fn main() -> std::process::ExitCode {
    mysimbdp::cli::main()
}
