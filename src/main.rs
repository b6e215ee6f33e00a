//! The `kho` binary: runs the CLI and turns an error into a message and exit code 1.

use std::process::ExitCode;

fn main() -> ExitCode {
    match kho::cli::run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
