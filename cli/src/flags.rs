//! Parsers of flag values that several commands accept: items of comma-separated lists
//! (`--models a,b`, `--fallback`, `--drop-param`) and amounts in USD (`--max-budget`,
//! `--input-price`, `--output-price`). A parser that serves one command lives with it.

/// One item of a comma-separated list, trimmed; empty items are refused.
pub fn list_item(raw: &str) -> Result<String, String> {
    let item = raw.trim();
    if item.is_empty() {
        Err("empty list item".to_owned())
    } else {
        Ok(item.to_owned())
    }
}

/// `--max-budget`, `--input-price`, `--output-price`: a finite, non-negative amount in USD,
/// e.g. `25`, `12.50` or `$12.50`.
pub fn parse_usd(raw: &str) -> Result<f64, String> {
    let text = raw.trim();
    let text = text.strip_prefix('$').unwrap_or(text).trim();
    let amount: f64 = text
        .parse()
        .map_err(|_| format!("{raw:?} is not an amount in USD (e.g. 25 or 12.50)"))?;
    if !amount.is_finite() {
        return Err("the amount must be a finite number".to_owned());
    }
    if amount < 0.0 {
        return Err("the amount cannot be negative".to_owned());
    }
    // `-0` parses as negative zero; send a plain zero.
    Ok(amount.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_list_items() {
        assert_eq!(list_item(" a "), Ok("a".to_owned()));
        assert!(list_item("").is_err());
        assert!(list_item("  ").is_err());
    }

    #[test]
    fn parses_usd() {
        assert_eq!(parse_usd("25"), Ok(25.0));
        assert_eq!(parse_usd("12.50"), Ok(12.5));
        assert_eq!(parse_usd(" $3.5 "), Ok(3.5));
        assert_eq!(parse_usd("0"), Ok(0.0));
        assert!(parse_usd("-0").unwrap().is_sign_positive());
        for bad in [
            "-1", "-0.01", "NaN", "nan", "inf", "-inf", "", "$", "12,50", "ten",
        ] {
            assert!(parse_usd(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
