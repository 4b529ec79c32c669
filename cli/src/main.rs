//! Thin entry point over the `botburrow_cli` library.
fn main() {
    eprintln!("botburrow: not implemented yet");
    std::process::exit(1);
}
