//! Thin entry point over the `botburrow_devhub` library.
fn main() {
    eprintln!("botburrow-devhub: not implemented yet");
    std::process::exit(1);
}
