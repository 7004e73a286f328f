use std::fmt;

use serde::Serialize;

use crate::location::SourceLocation;

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file it is in contributes no databases.
    Error,
    /// Worth fixing, but the file is still applied.
    Warning,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem found in the apps repo, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub location: SourceLocation,
    /// Path of the offending value, e.g. `postgresqlDatabases[1].mode`, or `namespace` for the
    /// namespace folder. Empty when the problem is not tied to a field (unreadable file, YAML
    /// syntax).
    pub field: String,
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(
        location: SourceLocation,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Error, location, field.into(), message.into())
    }

    pub fn warning(
        location: SourceLocation,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Warning, location, field.into(), message.into())
    }

    fn new(severity: Severity, location: SourceLocation, field: String, message: String) -> Self {
        Self {
            severity,
            location,
            field,
            message,
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Whether it fails its file.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// rustc style, so that editors and CI log viewers can jump to the location:
///
/// ```text
/// error: idp-dev/my-db/values.yaml:4:11: postgresqlDatabases[0].mdoe: unknown field `mdoe`
///   help: did you mean `mode`?
/// ```
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: ", self.severity.label(), self.location)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  help: {hint}")?;
        }
        Ok(())
    }
}

/// Puts diagnostics in report order: by file, line and column. The sort is stable, so problems
/// at the same position keep the order in which they were found.
pub(crate) fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| a.location.cmp(&b.location));
}

/// Longest user text quoted in a message; a megabyte-long name must not drown the report.
const MAX_SHOWN_CHARS: usize = 80;

/// User text as it is safe to quote in a message: control characters are escaped so a hostile
/// value cannot forge extra report lines, and overlong values are cut.
pub fn shown(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_SHOWN_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn location() -> SourceLocation {
        SourceLocation {
            file: PathBuf::from("idp-dev/my-db/values.yaml"),
            line: 4,
            column: 11,
        }
    }

    #[test]
    fn displays_with_hint_on_a_second_line() {
        let diagnostic = Diagnostic::error(
            location(),
            "postgresqlDatabases[0].mdoe",
            "unknown field `mdoe`",
        )
        .with_hint("did you mean `mode`?");
        assert_eq!(
            diagnostic.to_string(),
            "error: idp-dev/my-db/values.yaml:4:11: postgresqlDatabases[0].mdoe: unknown field `mdoe`\n  help: did you mean `mode`?"
        );
    }

    #[test]
    fn displays_without_field_or_hint() {
        let diagnostic = Diagnostic::warning(location(), "", "something odd");
        assert_eq!(
            diagnostic.to_string(),
            "warning: idp-dev/my-db/values.yaml:4:11: something odd"
        );
    }

    #[test]
    fn serializes_for_machine_readable_output() {
        let diagnostic = Diagnostic::warning(location(), "namespace", "m").with_hint("h");
        assert_eq!(
            serde_json::to_value(&diagnostic).unwrap(),
            serde_json::json!({
                "severity": "warning",
                "location": {"file": "idp-dev/my-db/values.yaml", "line": 4, "column": 11},
                "field": "namespace",
                "message": "m",
                "hint": "h",
            })
        );
    }

    #[test]
    fn shown_escapes_control_characters_and_cuts_long_text() {
        assert_eq!(shown("a\nb\"c"), "a\\nb\"c");
        let long = "x".repeat(200);
        assert_eq!(shown(&long).chars().count(), MAX_SHOWN_CHARS + 1);
    }
}
