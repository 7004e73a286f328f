//! The one place where names and literals become SQL text.
//!
//! Every identifier that reaches a statement goes through [`Ident::quote`]; the few literals that DDL
//! cannot take as bind parameters (comments, password verifiers) go through [`quote_literal`].
//! Catalog queries never build SQL from values: they use bind parameters.

use std::fmt;

/// A PostgreSQL identifier exactly as stored in the catalog (case and punctuation preserved).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Ident(String);

impl Ident {
    pub fn new(name: impl Into<String>) -> Self {
        Ident(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Always double-quotes, so the name is taken verbatim: no case folding, no keyword clashes,
    /// and an embedded `"` is doubled so it can never end the identifier early.
    pub fn quote(&self) -> String {
        quote_ident(&self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn quote_ident(name: &str) -> String {
    enclose(name, '"')
}

/// Wraps `text` in `quote`, doubling every `quote` inside: SQL's one escaping rule for both
/// quoted identifiers and standard string literals.
pub fn enclose(text: &str, quote: char) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push(quote);
    for ch in text.chars() {
        if ch == quote {
            quoted.push(quote);
        }
        quoted.push(ch);
    }
    quoted.push(quote);
    quoted
}

/// A standard-conforming string literal: `'` doubled, and an `E''` form never used, so backslashes
/// stay literal (the server runs with `standard_conforming_strings = on`, the default since 9.1,
/// and the executor sets it on every control connection).
pub fn quote_literal(value: &str) -> String {
    enclose(value, '\'')
}

/// A word for a POSIX shell (PostgreSQL's `archive_command`, `KEY='value'` files): single quotes
/// make anything literal, and a `'` inside is closed, escaped and reopened.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// A comma-separated list of quoted identifiers, for `GRANT … TO a, b`.
pub fn quote_list<'a>(idents: impl IntoIterator<Item = &'a Ident>) -> String {
    idents
        .into_iter()
        .map(Ident::quote)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names an attacker (or a typo) could put in a spec if validation ever let them through.
    const HOSTILE: &[&str] = &[
        "",
        "plain",
        "MixedCase",
        "with space",
        "a\"b",
        "\"",
        "\"\"",
        "x\"; DROP DATABASE postgres; --",
        "semi;colon",
        "$$",
        "$tag$ body $tag$",
        "back\\slash",
        "quote'single",
        "new\nline",
        "tab\tch",
        "null\u{0}byte",
        "ünïcödé-名前",
        "select",
        "-- comment",
        "/* c */",
    ];

    /// Undo quote_ident the way the server's scanner does: strip the outer quotes, fold `""` to `"`.
    fn unquote(quoted: &str) -> Option<String> {
        let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
        let mut out = String::new();
        let mut chars = inner.chars().peekable();
        while let Some(ch) = chars.next() {
            if ch == '"' {
                // Inside a quoted identifier a lone `"` would end it: it must be doubled.
                if chars.next() != Some('"') {
                    return None;
                }
            }
            out.push(ch);
        }
        Some(out)
    }

    #[test]
    fn quote_round_trips_every_hostile_name() {
        for name in HOSTILE {
            let quoted = Ident::new(*name).quote();
            assert_eq!(unquote(&quoted).as_deref(), Some(*name), "{quoted}");
        }
    }

    #[test]
    fn quoted_identifier_has_no_unescaped_quote_inside() {
        for name in HOSTILE {
            let quoted = Ident::new(*name).quote();
            let inner = &quoted[1..quoted.len() - 1];
            assert_eq!(inner.matches('"').count() % 2, 0, "{quoted}");
            assert!(!inner.replace("\"\"", "").contains('"'), "{quoted}");
        }
    }

    #[test]
    fn shell_words_read_back_through_a_shell() {
        for value in HOSTILE.iter().filter(|v| !v.contains('\0')) {
            let output = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {}", shell_quote(value)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&output.stdout), *value);
        }
    }

    #[test]
    fn quote_examples() {
        assert_eq!(Ident::new("idp-dev-my-db").quote(), "\"idp-dev-my-db\"");
        assert_eq!(Ident::new("a\"b").quote(), "\"a\"\"b\"");
        assert_eq!(Ident::new("").quote(), "\"\"");
        assert_eq!(
            quote_list(&[Ident::new("a"), Ident::new("b\"")]),
            "\"a\", \"b\"\"\""
        );
    }

    #[test]
    fn literal_doubles_single_quotes_and_keeps_backslashes() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\'b"), "'a\\''b'");
        assert_eq!(quote_literal("$$"), "'$$'");
        for value in HOSTILE {
            let quoted = quote_literal(value);
            let inner = &quoted[1..quoted.len() - 1];
            assert!(!inner.replace("''", "").contains('\''), "{quoted}");
        }
    }
}
