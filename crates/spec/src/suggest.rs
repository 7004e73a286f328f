//! "Did you mean …?" for misspelt keys and values.

/// Largest edit distance still taken for a typo. Two covers a transposition plus one slip
/// (`nmae`, `protcted`) without turning every short word into a suggestion.
const MAX_TYPO_DISTANCE: usize = 2;

/// Shortest abbreviation taken for the word it starts (`prod` for `production`).
const MIN_ABBREVIATION_CHARS: usize = 3;

/// The candidate `input` most plausibly meant, if any is close enough.
pub fn closest<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .filter_map(|&candidate| distance(input, candidate).map(|d| (d, candidate)))
        .min_by_key(|&(d, _)| d)
        .map(|(_, candidate)| candidate)
}

/// [`closest`] for a value among fixed words, which may also be an abbreviation of exactly one
/// of them (`prod`). Not for keys: a chart's `postgres:` must not read as `postgresqlDatabases`.
pub fn closest_word<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    closest(input, candidates).or_else(|| abbreviated(input, candidates))
}

fn abbreviated<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let input = normalized(input);
    if input.chars().count() < MIN_ABBREVIATION_CHARS {
        return None;
    }
    let mut starting = candidates
        .iter()
        .filter(|candidate| normalized(candidate).starts_with(&input));
    match (starting.next(), starting.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

fn distance(input: &str, candidate: &str) -> Option<usize> {
    // Case and word separators are how people usually get a camelCase key wrong
    // (`Mode`, `deletion_protection`); such a spelling is as good as an exact match.
    if normalized(input) == normalized(candidate) {
        return Some(0);
    }
    let d = strsim::damerau_levenshtein(input, candidate);
    (d <= MAX_TYPO_DISTANCE).then_some(d)
}

fn normalized(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: [&str; 3] = ["name", "mode", "deletionProtection"];

    #[test]
    fn finds_typos_case_and_separator_mistakes() {
        assert_eq!(closest("nmae", &FIELDS), Some("name"));
        assert_eq!(closest("Mode", &FIELDS), Some("mode"));
        assert_eq!(
            closest("deletion_protection", &FIELDS),
            Some("deletionProtection")
        );
        assert_eq!(
            closest("DELETION-PROTECTION", &FIELDS),
            Some("deletionProtection")
        );
        assert_eq!(
            closest("protect", &["standard", "protected"]),
            Some("protected")
        );
    }

    #[test]
    fn finds_unambiguous_abbreviations() {
        let tiers = ["production", "staging", "test", "dev"];
        assert_eq!(closest_word("prod", &tiers), Some("production"));
        assert_eq!(closest_word("Stag", &tiers), Some("staging"));
        assert_eq!(closest_word("pr", &tiers), None);
        assert_eq!(closest_word("app", &["app-migrator", "application"]), None);
        assert_eq!(closest("prod", &tiers), None);
    }

    #[test]
    fn suggests_nothing_for_unrelated_words() {
        assert_eq!(closest("replicas", &FIELDS), None);
        assert_eq!(closest("owner", &FIELDS), None);
        assert_eq!(closest("", &FIELDS), None);
    }
}
