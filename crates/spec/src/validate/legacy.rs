//! The entry's mode, and chart 0.5.0's `deletionProtection` it may be written as.

use crate::diagnostic::Diagnostic;
use crate::location::SourceLocation;
use crate::model::Mode;
use crate::parse::{mode_of, Field, Format, RawEntry, LEGACY_PROTECTION};

/// One use of chart 0.5.0's `deletionProtection`: the entry's field path, where the key is,
/// what it said and the mode it is read as.
pub(super) struct LegacyUse {
    field: String,
    location: SourceLocation,
    protected: bool,
    mode: Mode,
}

/// The deprecation warning for `deletionProtection`, once per file however many entries use it,
/// at the first of them.
pub(super) fn legacy_protection_warning(uses: &[LegacyUse]) -> Option<Diagnostic> {
    let (first, more) = uses.split_first()?;
    let diagnostic = if more.is_empty() {
        Diagnostic::warning(
            first.location.clone(),
            first.field.clone(),
            format!(
                "`{LEGACY_PROTECTION}` is the legacy (chart 0.5.0) spelling of `mode`; \
                 read as `mode: {}`",
                first.mode.as_str()
            ),
        )
        .with_hint(format!(
            "replace `{LEGACY_PROTECTION}: {}` with `mode: {}` (`pgtenant spec upgrade` does it)",
            first.protected,
            first.mode.as_str()
        ))
    } else {
        Diagnostic::warning(
            first.location.clone(),
            first.field.clone(),
            format!(
                "`{LEGACY_PROTECTION}` is the legacy (chart 0.5.0) spelling of `mode`, used by {} \
                 entries of this file; each is read as the `mode` it means",
                uses.len()
            ),
        )
        .with_hint(format!(
            "replace `{LEGACY_PROTECTION}: true` with `mode: protected` and \
             `{LEGACY_PROTECTION}: false` with `mode: standard` (`pgtenant spec upgrade` does it)"
        ))
    };
    Some(diagnostic)
}

/// The entry's mode, converting chart 0.5.0's `deletionProtection`. Falls back to the default
/// when the fields are unusable; the file fails in that case anyway.
pub(super) fn mode(
    entry: &RawEntry,
    format: Format,
    legacy_uses: &mut Vec<LegacyUse>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Mode {
    let field = format!("{}.{LEGACY_PROTECTION}", entry.path);
    match (&entry.mode, &entry.deletion_protection) {
        (Field::Given(mode), Field::Absent) => mode.value,
        (Field::Absent | Field::Invalid, Field::Absent) | (Field::Absent, Field::Invalid) => {
            Mode::default()
        }
        (Field::Absent, Field::Given(legacy)) => {
            let mode = mode_of(legacy.value);
            // `spec upgrade` replaces the field, so it does not warn about what it fixes.
            if format == Format::Legacy {
                legacy_uses.push(LegacyUse {
                    field,
                    location: legacy.location.clone(),
                    protected: legacy.value,
                    mode,
                });
            }
            mode
        }
        (Field::Given(_) | Field::Invalid, Field::Given(_) | Field::Invalid) => {
            let location = match &entry.deletion_protection {
                Field::Given(legacy) => legacy.location.clone(),
                _ => entry.location.clone(),
            };
            diagnostics.push(
                Diagnostic::error(
                    location,
                    field,
                    format!("both `mode` and the legacy `{LEGACY_PROTECTION}` are set"),
                )
                .with_hint(format!("remove `{LEGACY_PROTECTION}`: `mode` replaces it")),
            );
            Mode::default()
        }
    }
}
