//! An entry's `cluster:` (the cluster a new tenant goes to) and `placement: {labels: {k: v}}`
//! (the labels its cluster must have). Which clusters exist is the platform config's business:
//! an unknown name is reported where the spec meets the config, at the location kept here.

use std::collections::BTreeMap;

use saphyr::{MarkedYaml, Scalar, YamlData};

use super::{
    describe, listed, string, Field, Parser, PLACEMENT, PLACEMENT_FIELDS, PLACEMENT_LABELS,
};
use crate::diagnostic::shown;
use crate::model::{is_label_key, LABEL_KEY_HINT};
use crate::suggest::closest;
use crate::validate::is_dns_label;

impl Parser<'_> {
    /// `cluster: NAME`, a DNS-1123 label of at most 63 characters.
    pub(super) fn cluster(&mut self, field: &str, value: &MarkedYaml) -> Field<String> {
        match string(value) {
            Some(name) if is_dns_label(name) && name.len() <= 63 => {
                self.given(value, name.to_owned())
            }
            Some(name) => {
                self.error(
                    value,
                    field,
                    format!("`{}` is not a valid cluster name", shown(name)),
                    "cluster names are DNS-1123 labels (lowercase letters, digits and '-'), as \
                     `clusters[].name` in pgtenant.yaml, e.g. `cluster: main`"
                        .to_owned(),
                );
                Field::Invalid
            }
            None => {
                self.error(
                    value,
                    field,
                    format!(
                        "expected the name of a cluster of pgtenant.yaml, found {}",
                        describe(value)
                    ),
                    "e.g. `cluster: main`".to_owned(),
                );
                Field::Invalid
            }
        }
    }

    /// `placement: {labels: {tier: production, region: eu}}`.
    pub(super) fn placement(
        &mut self,
        field: &str,
        value: &MarkedYaml,
    ) -> Field<BTreeMap<String, String>> {
        let example = format!("e.g. `{PLACEMENT}: {{{PLACEMENT_LABELS}: {{region: eu}}}}`");
        let YamlData::Mapping(fields) = &value.data else {
            self.error(
                value,
                field,
                format!(
                    "expected the placement's settings, found {}",
                    describe(value)
                ),
                example,
            );
            return Field::Invalid;
        };
        let mut labels = BTreeMap::new();
        let mut usable = true;
        for (key, setting) in fields {
            let name = string(key).unwrap_or_default();
            if name != PLACEMENT_LABELS {
                let hint = match closest(name, &PLACEMENT_FIELDS) {
                    Some(known) => format!("did you mean `{known}`?"),
                    None => format!(
                        "the settings of `{PLACEMENT}` are {}",
                        listed(&PLACEMENT_FIELDS, "and")
                    ),
                };
                let unknown = shown(name);
                self.error(
                    key,
                    &format!("{field}.{unknown}"),
                    format!("unknown field `{unknown}`"),
                    hint,
                );
                usable = false;
                continue;
            }
            let path = format!("{field}.{PLACEMENT_LABELS}");
            let YamlData::Mapping(entries) = &setting.data else {
                self.error(
                    setting,
                    &path,
                    format!(
                        "expected labels as a mapping of names to values, found {}",
                        describe(setting)
                    ),
                    example.clone(),
                );
                usable = false;
                continue;
            };
            for (label, label_value) in entries {
                let Some(label) = string(label).filter(|l| is_label_key(l)) else {
                    self.error(
                        label,
                        &path,
                        format!("{} is not a label name", describe(label)),
                        LABEL_KEY_HINT.to_owned(),
                    );
                    usable = false;
                    continue;
                };
                let at = format!("{path}.{label}");
                match &label_value.data {
                    YamlData::Value(Scalar::String(text)) => {
                        labels.insert(label.to_owned(), text.to_string());
                    }
                    _ => {
                        self.error(
                            label_value,
                            &at,
                            format!(
                                "expected the label's value as a string, found {}",
                                describe(label_value)
                            ),
                            format!("quote it so YAML reads it as text: `{label}: \"…\"`"),
                        );
                        usable = false;
                    }
                }
            }
        }
        if !usable {
            return Field::Invalid;
        }
        self.given(value, labels)
    }
}
