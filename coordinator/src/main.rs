//! Thin entry point over the `botburrow_coordinator` library.
fn main() {
    eprintln!("botburrow-coordinator: not implemented yet");
    std::process::exit(1);
}
