//! The `hongbao` binary; everything is in the library.

fn main() -> std::process::ExitCode {
    hongbao::cli::main()
}
