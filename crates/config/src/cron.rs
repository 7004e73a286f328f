//! Backup schedules: five cron fields, checked for shape only (the service runs them later).

/// The fields of a schedule, with the values each allows.
const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

/// Ok when `text` is `MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK`, each a list of `*`, `N`,
/// `N-M`, optionally `/STEP`, within the field's range; otherwise what is wrong.
pub fn check_schedule(text: &str) -> Result<(), String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return Err(format!(
            "a schedule has 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    for (field, (name, min, max)) in fields.iter().zip(FIELDS) {
        for item in field.split(',') {
            check_item(item, min, max).map_err(|why| format!("{name} field `{field}`: {why}"))?;
        }
    }
    Ok(())
}

fn check_item(item: &str, min: u32, max: u32) -> Result<(), String> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (item, None),
    };
    if let Some(step) = step {
        match step.parse::<u32>() {
            Ok(step) if step > 0 && step <= max => {}
            _ => return Err(format!("`/{step}` is not a step from 1 to {max}")),
        }
    }
    if range == "*" {
        return Ok(());
    }
    let number = |text: &str| match text.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("`{text}` is not a number from {min} to {max}")),
    };
    match range.split_once('-') {
        Some((from, to)) => {
            let (from, to) = (number(from)?, number(to)?);
            if from > to {
                return Err(format!("the range `{range}` runs backwards"));
            }
        }
        None => {
            number(range)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_usual_shapes() {
        for text in [
            "0 2 * * 0",
            "0 2 * * 1-6",
            "*/15 * * * *",
            "0 0,12 1 */2 *",
            "30 3 1-7 * 7",
        ] {
            assert_eq!(check_schedule(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_schedule() {
        let cases = [
            ("0 2 * *", "5 fields"),
            ("0 2 * * * *", "found 6"),
            (
                "60 2 * * *",
                "minute field `60`: `60` is not a number from 0 to 59",
            ),
            ("0 24 * * *", "hour field"),
            ("0 2 0 * *", "day of month field"),
            ("0 2 * 13 *", "month field"),
            ("0 2 * * 8", "day of week field"),
            ("0 2 * * mon", "`mon` is not a number"),
            ("0 5-2 * * *", "runs backwards"),
            ("*/0 * * * *", "`/0` is not a step"),
            ("@daily", "5 fields"),
        ];
        for (text, expected) in cases {
            let error = check_schedule(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
