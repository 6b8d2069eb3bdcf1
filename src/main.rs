//! The `wabot` command line; everything it does lives in the library.

fn main() -> std::process::ExitCode {
    wabot::cli::main()
}
