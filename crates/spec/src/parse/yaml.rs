//! The YAML layer: saphyr's syntax errors, what a node is, and the parser's located values
//! and diagnostics.

use std::path::Path;

use saphyr::{MarkedYaml, Scalar, ScanError, YamlData};

use super::{Field, Located, Parser};
use crate::diagnostic::{shown, Diagnostic};
use crate::location::SourceLocation;

/// saphyr reports a repeated mapping key as a scan error; this is its wording, matched so the
/// user gets a fix that fits.
const SAPHYR_DUPLICATE_KEY: &str = "duplicated key in mapping";

pub fn syntax_error(file: &Path, error: &ScanError) -> Diagnostic {
    let location = SourceLocation::at(file, error.marker());
    if error.info() == SAPHYR_DUPLICATE_KEY {
        Diagnostic::error(location, "", "duplicate key in a mapping")
            .with_hint("remove or rename one of the two: YAML readers disagree on which one wins")
    } else {
        Diagnostic::error(location, "", format!("invalid YAML: {}", error.info())).with_hint(
            "fix the YAML syntax at or just before this position (indentation, quotes, brackets)",
        )
    }
}

impl Parser<'_> {
    pub(super) fn location(&self, node: &MarkedYaml) -> SourceLocation {
        SourceLocation::at(self.file, &node.span.start)
    }

    pub(super) fn error(&mut self, node: &MarkedYaml, field: &str, message: String, hint: String) {
        let diagnostic = Diagnostic::error(self.location(node), field, message).with_hint(hint);
        self.diagnostics.push(diagnostic);
    }

    pub(super) fn given<T>(&self, node: &MarkedYaml, value: T) -> Field<T> {
        Field::Given(Located {
            value,
            location: self.location(node),
        })
    }
}

pub(crate) fn string<'a>(node: &'a MarkedYaml) -> Option<&'a str> {
    match &node.data {
        YamlData::Value(Scalar::String(text)) => Some(text),
        _ => None,
    }
}

/// What a node is, for "expected …, found …" messages.
pub fn describe(node: &MarkedYaml) -> String {
    match &node.data {
        YamlData::Value(Scalar::Null) => "no value".to_owned(),
        YamlData::Value(Scalar::Boolean(value)) => format!("the boolean `{value}`"),
        YamlData::Value(Scalar::Integer(value)) => format!("the number `{value}`"),
        YamlData::Value(Scalar::FloatingPoint(value)) => format!("the number `{value}`"),
        YamlData::Value(Scalar::String(value)) => format!("the string `{}`", shown(value)),
        YamlData::Sequence(_) => "a list".to_owned(),
        YamlData::Mapping(_) => "a mapping".to_owned(),
        YamlData::Tagged(tag, _) => format!("a value tagged `{tag}`"),
        YamlData::Representation(..) | YamlData::Alias(_) | YamlData::BadValue => {
            "a value that could not be read".to_owned()
        }
    }
}
