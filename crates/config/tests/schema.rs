//! The committed JSON Schema is current, and the examples of docs/config.md are what the parser
//! accepts (or, after `<!-- invalid -->`, reports as the ```text block after them says).

use std::fs;
use std::path::{Path, PathBuf};

use pgtenant_config::{config_schema_text, parse};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_committed_config_schema_is_current() {
    let path = workspace().join("docs/pgtenant-config.schema.json");
    let committed = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == config_schema_text(),
        "{} is stale: regenerate it with `pgtenant config schema > docs/pgtenant-config.schema.json` \
         (or `cargo run -q -- config schema > docs/pgtenant-config.schema.json`)",
        path.display()
    );
}

/// A fenced block of docs/config.md.
struct Block {
    line: usize,
    language: String,
    text: String,
    invalid: bool,
}

fn doc_blocks() -> Vec<Block> {
    let doc = fs::read_to_string(workspace().join("docs/config.md")).unwrap();
    let mut blocks = Vec::new();
    let mut lines = doc.lines().enumerate();
    let mut previous = "";
    while let Some((number, line)) = lines.next() {
        if let Some(language) = line.trim().strip_prefix("```").filter(|l| !l.is_empty()) {
            let mut text = String::new();
            for (_, line) in lines.by_ref() {
                if line.trim() == "```" {
                    break;
                }
                text.push_str(line);
                text.push('\n');
            }
            blocks.push(Block {
                line: number + 1,
                language: language.to_owned(),
                text,
                invalid: previous.trim() == "<!-- invalid -->",
            });
            previous = "";
        } else if !line.trim().is_empty() {
            previous = line;
        }
    }
    blocks
}

#[test]
fn the_documented_configs_are_valid_and_the_documented_mistakes_reported_as_shown() {
    let blocks = doc_blocks();
    let (mut valid, mut invalid) = (0, 0);
    for (index, block) in blocks.iter().enumerate() {
        if block.language != "yaml" {
            continue;
        }
        let loaded = parse(
            Path::new("pgtenant.yaml"),
            Path::new("/etc/pgtenant"),
            &block.text,
        );
        let rendered: String = loaded
            .diagnostics
            .iter()
            .map(|d| format!("{d}\n"))
            .collect();
        if block.invalid {
            let report = blocks
                .get(index + 1)
                .filter(|next| next.language == "text")
                .unwrap_or_else(|| panic!("docs/config.md:{}: no report after it", block.line));
            assert_eq!(report.text, rendered, "docs/config.md:{}", report.line);
            invalid += 1;
        } else {
            assert!(
                loaded.diagnostics.is_empty(),
                "docs/config.md:{}:\n{rendered}",
                block.line
            );
            valid += 1;
        }
    }
    assert!(
        valid >= 2 && invalid >= 1,
        "{valid} valid, {invalid} invalid examples"
    );
}
