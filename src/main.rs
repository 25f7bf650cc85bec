use std::process::ExitCode;

fn main() -> ExitCode {
    shadowsync::cli::main()
}
