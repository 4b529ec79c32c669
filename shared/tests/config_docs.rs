//! `docs/configuration.md` carries the settings table generated from `SETTINGS`; this test fails
//! when they drift. Regenerate with `BOTBURROW_BLESS=1 cargo test -p botburrow-shared --test config_docs`.

use botburrow_shared::settings::{SETTINGS, markdown_table};

const BEGIN: &str = "<!-- BEGIN GENERATED SETTINGS TABLE -->\n";
const END: &str = "<!-- END GENERATED SETTINGS TABLE -->";

#[test]
fn configuration_reference_matches_the_settings_table() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let doc = std::fs::read_to_string(&path).expect("docs/configuration.md exists");
    let start = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = doc.find(END).expect("end marker");
    let table = markdown_table();
    if std::env::var("BOTBURROW_BLESS").is_ok() {
        let new = format!("{}{}{}", &doc[..start], table, &doc[end..]);
        std::fs::write(&path, new).expect("write");
        return;
    }
    assert_eq!(&doc[start..end], table, "docs/configuration.md is stale; regenerate it (see this test's doc)");
    for s in SETTINGS {
        assert!(doc.contains(&format!("`{}`", s.name)), "{} missing from docs", s.name);
    }
}
