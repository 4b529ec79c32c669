//! Placeholder; the strict mock LLM server is built in `botburrow_testkit::mock_llm`.
fn main() {}
