//! The `mysimbdp` CLI, built inside the test package so tests can run it.
fn main() -> std::process::ExitCode {
    mysimbdp::cli::main()
}
