use std::fmt;
use std::path::{Path, PathBuf};

use saphyr::Marker;
use serde::Serialize;

/// A position in the apps repo.
///
/// Ordered by file, then line, then column, which is the order diagnostics are reported in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
pub struct SourceLocation {
    /// Path relative to the repo root, e.g. `idp-dev/my-db/values.yaml`.
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
}

impl SourceLocation {
    /// The start of `file`: where problems go that belong to the file as a whole.
    pub fn file_start(file: &Path) -> Self {
        Self {
            file: file.to_path_buf(),
            line: 1,
            column: 1,
        }
    }

    pub fn at(file: &Path, marker: &Marker) -> Self {
        // saphyr counts lines from 1 but columns from 0. Nodes synthesised by saphyr carry a
        // zeroed marker; clamping keeps such a location printable instead of pointing at line 0.
        Self {
            file: file.to_path_buf(),
            line: marker.line().max(1),
            column: marker.col() + 1,
        }
    }
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_a_compiler_location() {
        let location = SourceLocation {
            file: PathBuf::from("idp-dev/my-db/values.yaml"),
            line: 3,
            column: 7,
        };
        assert_eq!(location.to_string(), "idp-dev/my-db/values.yaml:3:7");
    }

    #[test]
    fn converts_saphyr_zero_based_columns() {
        let location = SourceLocation::at(Path::new("a/values.yaml"), &Marker::new(10, 2, 4));
        assert_eq!((location.line, location.column), (2, 5));
    }

    #[test]
    fn orders_by_file_then_line_then_column() {
        let at = |file: &str, line, column| SourceLocation {
            file: PathBuf::from(file),
            line,
            column,
        };
        let mut locations = vec![at("b", 1, 1), at("a", 2, 1), at("a", 1, 9), at("a", 1, 2)];
        locations.sort();
        assert_eq!(
            locations,
            vec![at("a", 1, 2), at("a", 1, 9), at("a", 2, 1), at("b", 1, 1)]
        );
    }
}
