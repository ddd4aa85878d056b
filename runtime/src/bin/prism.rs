//! The `prism` command: `prism start --head`, `prism start --address A --token T`,
//! `prism status`, `prism stop`.

fn main() -> std::process::ExitCode {
    prism::cli::main()
}
