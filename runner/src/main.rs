//! Thin entry point over the `botburrow_runner` library.
fn main() {
    eprintln!("botburrow-runner: not implemented yet");
    std::process::exit(1);
}
