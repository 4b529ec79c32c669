//! Thin entry point over the `botburrow_cli` library.
fn main() -> std::process::ExitCode {
    botburrow_cli::main_entry()
}
