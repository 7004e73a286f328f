//! The JSON Schema for editors and docs/spec.md: the committed schema is current, the examples
//! conform, the documented mistakes and upgrade are what pgtenant reports and does, and the
//! schema never rejects what the parser accepts.
//!
//! Validation uses a small draft-07 validator below, covering exactly the keywords the schema
//! uses; a test fails if the schema starts using one it does not know.

use std::fs;
use std::path::{Path, PathBuf};

use pgtenant_spec::{parse_file, values_file_schema, values_file_schema_text, Diagnostic};
use regex::Regex;
use saphyr::{LoadableYamlNode, Scalar, Yaml};
use serde_json::{json, Value};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_committed_schema_is_current() {
    let path = workspace().join("docs/pgtenant.schema.json");
    let committed = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == values_file_schema_text(),
        "{} is stale: regenerate it with `pgtenant spec schema > docs/pgtenant.schema.json` \
         (or `cargo run -q -- spec schema > docs/pgtenant.schema.json`)",
        path.display()
    );
}

#[test]
fn the_schema_uses_only_keywords_the_test_validator_knows() {
    fn walk(schema: &Value, path: &str) {
        let Value::Object(map) = schema else {
            assert!(schema.is_boolean(), "{path}: {schema}");
            return;
        };
        for (key, value) in map {
            let at = format!("{path}/{key}");
            match key.as_str() {
                "properties" | "definitions" => {
                    for (name, schema) in value.as_object().unwrap() {
                        walk(schema, &format!("{at}/{name}"));
                    }
                }
                "allOf" | "anyOf" | "oneOf" => {
                    for (i, schema) in value.as_array().unwrap().iter().enumerate() {
                        walk(schema, &format!("{at}/{i}"));
                    }
                }
                "items"
                | "additionalProperties"
                | "propertyNames"
                | "not"
                | "if"
                | "then"
                | "else" => walk(value, &at),
                known if KEYWORDS.contains(&known) => {}
                unknown => panic!("{at}: the test validator does not know `{unknown}`"),
            }
        }
    }
    walk(&values_file_schema(), "#");
}

#[test]
fn values_files_of_the_examples_and_docs_conform() {
    let schema = values_file_schema();
    let mut checked = 0;
    let apps = workspace().join("examples/apps");
    for relative in pgtenant_spec::find_values_files(&apps).unwrap() {
        let text = fs::read_to_string(apps.join(&relative)).unwrap();
        assert_conforms(&schema, &relative.display().to_string(), &text);
        let (databases, diagnostics) = parse_file(&relative, &text);
        assert!(
            !diagnostics.iter().any(Diagnostic::is_error),
            "{}: {diagnostics:#?}",
            relative.display()
        );
        assert!(!databases.is_empty(), "{}", relative.display());
        checked += 1;
    }
    assert!(checked >= 4, "found only {checked} example values files");

    // Every ```yaml block of docs/spec.md that declares databases, except the examples of
    // mistakes (after `<!-- invalid -->`).
    let mut blocks = 0;
    for block in doc_blocks() {
        if block.language == "yaml" && block.text.contains("postgresqlDatabases:") && !block.invalid
        {
            let name = format!("docs/spec.md:{}", block.line);
            assert_conforms(&schema, &name, &block.text);
            let (_, diagnostics) = parse_file(Path::new("team/app/values.yaml"), &block.text);
            assert!(
                !diagnostics.iter().any(Diagnostic::is_error),
                "{name}: {diagnostics:#?}"
            );
            blocks += 1;
        }
    }
    assert!(
        blocks >= 5,
        "found only {blocks} values files in docs/spec.md"
    );
}

/// A fenced block of docs/spec.md.
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    language: String,
    text: String,
    /// Preceded by `<!-- invalid -->`: an example of mistakes.
    invalid: bool,
    /// The last line of text before it.
    intro: String,
}

fn doc_blocks() -> Vec<Block> {
    let doc = fs::read_to_string(workspace().join("docs/spec.md")).unwrap();
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
                intro: previous.trim().to_owned(),
            });
            previous = "";
        } else if !line.trim().is_empty() {
            previous = line;
        }
    }
    blocks
}

/// The upgrade guide's "Before:" and "After:" are what `spec upgrade` does.
#[test]
fn the_documented_upgrade_is_what_upgrade_does() {
    let blocks = doc_blocks();
    let before = blocks
        .iter()
        .position(|b| b.intro == "Before:")
        .expect("a Before: block");
    let after = &blocks[before + 1];
    assert_eq!(after.intro, "After:");
    match pgtenant_spec::upgrade(Path::new("shop/cart/values.yaml"), &blocks[before].text) {
        pgtenant_spec::Upgrade::Upgraded { text, .. } => assert_eq!(text, after.text),
        other => panic!("{other:#?}"),
    }
}

/// The documented mistakes: each line marked `# ✗` has an error and no other line has one, and
/// the ```text block after it is the report, word for word.
#[test]
fn the_documented_mistakes_are_reported_as_documented() {
    let blocks = doc_blocks();
    let mut checked = 0;
    for (index, block) in blocks.iter().enumerate() {
        if !block.invalid {
            continue;
        }
        let (_, diagnostics) = parse_file(Path::new("shop/checkout/values.yaml"), &block.text);
        let marked: Vec<usize> = block
            .text
            .lines()
            .enumerate()
            .filter(|(_, line)| line.contains("# ✗"))
            .map(|(i, _)| i + 1)
            .collect();
        let mut with_errors: Vec<usize> = diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.location.line)
            .collect();
        with_errors.dedup();
        assert_eq!(
            with_errors, marked,
            "docs/spec.md:{}: {diagnostics:#?}",
            block.line
        );
        let report = blocks
            .get(index + 1)
            .filter(|next| next.language == "text")
            .unwrap_or_else(|| panic!("docs/spec.md:{}: no report after it", block.line));
        let rendered: String = diagnostics.iter().map(|d| format!("{d}\n")).collect();
        assert_eq!(report.text, rendered, "docs/spec.md:{}", report.line);
        checked += 1;
    }
    assert!(checked >= 1);
}

fn assert_conforms(schema: &Value, name: &str, text: &str) {
    let instance = yaml_to_json(text);
    let errors = validate(schema, &instance);
    assert!(
        errors.is_empty(),
        "{name} does not conform: {errors:#?}\n{text}"
    );
}

/// Entries the parser accepts: the schema must accept them too (in a v1 file unless legacy).
const ACCEPTED: &[(&str, &str)] = &[
    ("legacy", "{name: a}"),
    ("legacy", "{name: a, mode: protected}"),
    ("legacy", "{name: a, deletionProtection: true}"),
    ("legacy", "{name: 0-9}"),
    ("v1", "{name: a}"),
    ("v1", "{name: a, mode: standard, preset: schema-owner}"),
    ("v1", "{name: a, preset: app-migrator, schemas: [app, billing, _x1]}"),
    ("v1", "{name: a, extensions: [pgcrypto, uuid-ossp, pg_trgm, 0x]}"),
    ("v1", "{name: a, connectionLimit: -1}"),
    ("v1", "{name: a, connectionLimit: 2147483647}"),
    ("v1", "{name: a, environment: test}"),
    ("v1", "{name: a, roles: {}}"),
    ("v1", "{name: a, roles: {admin: {}, write: {connectionLimit: 0}, read: {logStatements: all}}}"),
    ("v1", "{name: a, preset: app-migrator, roles: {migrator: {statementTimeout: 15min}, app: {statementTimeout: 250}}}"),
    ("v1", "{name: a, preset: schema-owner, roles: {app: {statementTimeout: '0'}, write: {statementTimeout: 30 s}}}"),
    ("v1", "{name: a, roles: {read: {statementTimeout: 1h}, write: {statementTimeout: 2147483647}}}"),
];

/// Entries the parser rejects; `true` where the schema must reject them too. The others need
/// what a schema cannot know or express (PostgreSQL's limits on a string, the namespace
/// folder, duplicates across entries).
const REJECTED: &[(&str, &str, bool)] = &[
    ("legacy", "{name: a, preset: idp}", true),
    ("legacy", "{name: A}", true),
    ("legacy", "{name: a-}", true),
    ("legacy", "{name: a, mode: protect}", true),
    ("legacy", "{name: a, deletionProtection: 'yes'}", true),
    ("legacy", "{mode: standard}", true),
    (
        "legacy",
        "{name: a, mode: standard, deletionProtection: true}",
        false,
    ),
    ("v1", "{name: a, deletionProtection: true}", true),
    ("v1", "{name: a, owner: bob}", true),
    ("v1", "{name: a, preset: app_migrator}", true),
    ("v1", "{name: a, schemas: app}", true),
    ("v1", "{name: a, schemas: [Billing]}", true),
    ("v1", "{name: a, schemas: [public]}", true),
    ("v1", "{name: a, schemas: [pg_x]}", true),
    ("v1", "{name: a, schemas: [information_schema]}", true),
    ("v1", "{name: a, schemas: [a, a]}", true),
    ("v1", "{name: a, extensions: [-x]}", true),
    ("v1", "{name: a, extensions: [pgcrypto, pgcrypto]}", true),
    ("v1", "{name: a, connectionLimit: -2}", true),
    ("v1", "{name: a, connectionLimit: '10'}", true),
    ("v1", "{name: a, connectionLimit: 2147483648}", true),
    ("v1", "{name: a, environment: prod}", true),
    ("v1", "{name: a, roles: [write]}", true),
    ("v1", "{name: a, roles: {app: {}}}", true),
    ("v1", "{name: a, preset: idp, roles: {migrator: {}}}", true),
    (
        "v1",
        "{name: a, preset: app-migrator, roles: {admin: {}}}",
        true,
    ),
    (
        "v1",
        "{name: a, preset: schema-owner, roles: {owner: {}}}",
        true,
    ),
    (
        "v1",
        "{name: a, roles: {write: {statementTimeout: 30sec}}}",
        true,
    ),
    (
        "v1",
        "{name: a, roles: {write: {statementTimeout: -1}}}",
        true,
    ),
    (
        "v1",
        "{name: a, roles: {write: {statementTimeout: 1.5s}}}",
        true,
    ),
    (
        "v1",
        "{name: a, roles: {write: {statementTimeout: 1.5}}}",
        true,
    ),
    (
        "v1",
        "{name: a, roles: {write: {statementTimeout: 25d}}}",
        false,
    ),
    (
        "v1",
        "{name: a, roles: {write: {logStatements: verbose}}}",
        true,
    ),
    ("v1", "{name: a, roles: {write: {timeout: 1s}}}", true),
];

fn values_file(format: &str, entry: &str) -> String {
    let api_version = match format {
        "v1" => "apiVersion: pgtenant.io/v1\n",
        _ => "",
    };
    format!("image: x\n{api_version}postgresqlDatabases:\n  - {entry}\n")
}

#[test]
fn the_schema_agrees_with_the_parser() {
    let schema = values_file_schema();
    let path = Path::new("team/app/values.yaml");
    for (format, entry) in ACCEPTED {
        let text = values_file(format, entry);
        let (_, diagnostics) = parse_file(path, &text);
        assert!(
            !diagnostics.iter().any(Diagnostic::is_error),
            "{text}{diagnostics:#?}"
        );
        let errors = validate(&schema, &yaml_to_json(&text));
        assert!(errors.is_empty(), "the schema rejects\n{text}{errors:#?}");
    }
    for (format, entry, schema_rejects) in REJECTED {
        let text = values_file(format, entry);
        let (_, diagnostics) = parse_file(path, &text);
        assert!(
            diagnostics.iter().any(Diagnostic::is_error),
            "the parser accepts\n{text}"
        );
        let errors = validate(&schema, &yaml_to_json(&text));
        assert_eq!(
            !errors.is_empty(),
            *schema_rejects,
            "schema verdict on\n{text}{errors:#?}"
        );
    }
}

#[test]
fn the_top_level_holds_chart_values_too() {
    let schema = values_file_schema();
    for text in [
        "image: {repository: x}\nreplicaCount: 2\n",
        "postgresqlDatabases:\n",
        "postgresqlDatabases: []\nenv: [{name: A, value: b}]\n",
    ] {
        assert!(validate(&schema, &yaml_to_json(text)).is_empty(), "{text}");
    }
    for text in [
        "apiVersion: pgtenant.io/v2\npostgresqlDatabases: []\n",
        "postgresqlDatabases: {name: a}\n",
        "postgresqlDatabases: [my-db]\n",
    ] {
        assert!(!validate(&schema, &yaml_to_json(text)).is_empty(), "{text}");
    }
}

#[test]
fn the_test_validator_itself() {
    let schema = json!({
        "type": "object",
        "required": ["a"],
        "properties": {
            "a": {"type": "integer", "minimum": 1, "maximum": 3},
            "b": {"type": "array", "uniqueItems": true, "items": {"type": "string", "pattern": "^x", "maxLength": 2}},
            "c": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "d": {"not": {"enum": ["no"]}},
        },
        "additionalProperties": false,
    });
    assert!(validate(
        &schema,
        &json!({"a": 2, "b": ["x", "xy"], "c": 1, "d": "yes"})
    )
    .is_empty());
    for bad in [
        json!({}),
        json!({"a": 0}),
        json!({"a": 1.5}),
        json!({"a": 4}),
        json!({"a": 1, "b": ["x", "x"]}),
        json!({"a": 1, "b": ["y"]}),
        json!({"a": 1, "b": ["xyz"]}),
        json!({"a": 1, "c": true}),
        json!({"a": 1, "d": "no"}),
        json!({"a": 1, "e": 1}),
    ] {
        assert!(!validate(&schema, &bad).is_empty(), "{bad}");
    }
}

// ---- YAML to JSON, and a draft-07 validator for the keywords the schema uses ----

fn yaml_to_json(text: &str) -> Value {
    let documents = Yaml::load_from_str(text).expect("valid YAML");
    documents.first().map_or(Value::Null, convert)
}

fn convert(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Value(Scalar::Null) => Value::Null,
        Yaml::Value(Scalar::Boolean(value)) => Value::Bool(*value),
        Yaml::Value(Scalar::Integer(value)) => json!(value),
        Yaml::Value(Scalar::FloatingPoint(value)) => json!(value.into_inner()),
        Yaml::Value(Scalar::String(value)) => Value::String(value.to_string()),
        Yaml::Sequence(items) => Value::Array(items.iter().map(convert).collect()),
        Yaml::Mapping(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let key = match convert(key) {
                        Value::String(key) => key,
                        other => other.to_string(),
                    };
                    (key, convert(value))
                })
                .collect(),
        ),
        Yaml::Tagged(_, inner) => convert(inner),
        other => panic!("unexpected YAML node {other:?}"),
    }
}

/// Keywords without subschemas that the validator checks or that only annotate.
const KEYWORDS: &[&str] = &[
    "$schema",
    "$ref",
    "title",
    "description",
    "default",
    "type",
    "enum",
    "const",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "required",
    "uniqueItems",
];

/// Every violation of `schema` by `instance`, as `path: what`.
fn validate(schema: &Value, instance: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, instance, schema, "$", &mut errors);
    errors
}

fn is_valid(schema: &Value, instance: &Value, root: &Value) -> bool {
    let mut errors = Vec::new();
    check(schema, instance, root, "", &mut errors);
    errors.is_empty()
}

fn type_matches(name: &str, instance: &Value) -> bool {
    match name {
        "object" => instance.is_object(),
        "array" => instance.is_array(),
        "string" => instance.is_string(),
        "boolean" => instance.is_boolean(),
        "null" => instance.is_null(),
        "number" => instance.is_number(),
        "integer" => instance.is_i64() || instance.is_u64(),
        other => panic!("unknown type {other}"),
    }
}

fn check(schema: &Value, instance: &Value, root: &Value, at: &str, errors: &mut Vec<String>) {
    let Value::Object(schema) = schema else {
        if schema == &Value::Bool(false) {
            errors.push(format!("{at}: not allowed"));
        }
        return;
    };
    let mut fail = |what: String| errors.push(format!("{at}: {what}"));
    if let Some(Value::String(reference)) = schema.get("$ref") {
        let name = reference
            .strip_prefix("#/definitions/")
            .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
        let target = &root["definitions"][name];
        assert!(!target.is_null(), "dangling $ref {reference}");
        check(target, instance, root, at, errors);
        return;
    }
    if let Some(types) = schema.get("type") {
        let ok = match types {
            Value::String(name) => type_matches(name, instance),
            Value::Array(names) => names
                .iter()
                .any(|name| type_matches(name.as_str().unwrap(), instance)),
            other => panic!("bad type {other}"),
        };
        if !ok {
            fail(format!("expected type {types}, found {instance}"));
            return;
        }
    }
    if let Some(Value::Array(options)) = schema.get("enum") {
        if !options.contains(instance) {
            fail(format!("{instance} is not one of {options:?}"));
        }
    }
    if let Some(expected) = schema.get("const") {
        if expected != instance {
            fail(format!("{instance} is not {expected}"));
        }
    }
    if let Value::String(text) = instance {
        if let Some(Value::String(pattern)) = schema.get("pattern") {
            if !Regex::new(pattern).unwrap().is_match(text) {
                fail(format!("{text:?} does not match {pattern}"));
            }
        }
        let length = text.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
            if length < min {
                fail(format!("{text:?} is shorter than {min}"));
            }
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
            if length > max {
                fail(format!("{text:?} is longer than {max}"));
            }
        }
    }
    if let Some(number) = instance.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if number < min {
                fail(format!("{number} is less than {min}"));
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if number > max {
                fail(format!("{number} is more than {max}"));
            }
        }
    }
    if let Value::Array(items) = instance {
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(item_schema, item, root, &format!("{at}[{i}]"), errors);
            }
        }
        if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    errors.push(format!("{at}[{i}]: {item} is repeated"));
                }
            }
        }
    }
    if let Value::Object(map) = instance {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required {
                if !map.contains_key(name.as_str().unwrap()) {
                    errors.push(format!("{at}: missing {name}"));
                }
            }
        }
        for (key, value) in map {
            let path = format!("{at}.{key}");
            match properties.and_then(|properties| properties.get(key)) {
                Some(property) => check(property, value, root, &path, errors),
                None => {
                    if let Some(additional) = schema.get("additionalProperties") {
                        check(additional, value, root, &path, errors);
                    }
                }
            }
            if let Some(names) = schema.get("propertyNames") {
                check(names, &Value::String(key.clone()), root, &path, errors);
            }
        }
    }
    if let Some(Value::Array(all)) = schema.get("allOf") {
        for sub in all {
            check(sub, instance, root, at, errors);
        }
    }
    if let Some(Value::Array(any)) = schema.get("anyOf") {
        if !any.iter().any(|sub| is_valid(sub, instance, root)) {
            errors.push(format!("{at}: matches none of anyOf"));
        }
    }
    if let Some(Value::Array(one)) = schema.get("oneOf") {
        let matching = one
            .iter()
            .filter(|sub| is_valid(sub, instance, root))
            .count();
        if matching != 1 {
            errors.push(format!("{at}: matches {matching} of oneOf"));
        }
    }
    if let Some(not) = schema.get("not") {
        if is_valid(not, instance, root) {
            errors.push(format!("{at}: matches `not`"));
        }
    }
    if let Some(condition) = schema.get("if") {
        let branch = if is_valid(condition, instance, root) {
            schema.get("then")
        } else {
            schema.get("else")
        };
        if let Some(branch) = branch {
            check(branch, instance, root, at, errors);
        }
    }
}
