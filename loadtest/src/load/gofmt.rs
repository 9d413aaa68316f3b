//! Go's `fmt` `%g` / `%.Ng` for float64, so the text report reads exactly like fortio's
//! (`8.4583e-05`, `0.00123`, `1.234567e+06`).

/// `%g` (precision `None`: shortest representation that round-trips) or `%.Ng`.
pub fn g(value: f64, precision: Option<usize>) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if value == 0.0 {
        return "0".to_owned();
    }
    let sign = if value < 0.0 { "-" } else { "" };
    let (digits, exp) = decimal_digits(value.abs(), precision);
    let nd = digits.len() as i32;
    let dp = exp + 1; // position of the decimal point relative to the digits
    let eprec = match precision {
        None => 6,
        Some(p) => {
            let p = p.max(1) as i32;
            if p > nd && nd >= dp { nd } else { p }
        }
    };
    let body = if exp < -4 || exp >= eprec {
        scientific(&digits, exp)
    } else {
        fixed(&digits, dp)
    };
    format!("{sign}{body}")
}

/// Significant digits (no trailing zeros) and the decimal exponent of the first digit.
fn decimal_digits(value: f64, precision: Option<usize>) -> (String, i32) {
    let text = match precision {
        None => format!("{value:e}"),
        Some(p) => format!("{:.*e}", p.max(1) - 1, value),
    };
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let trimmed = digits.trim_end_matches('0');
    let digits = if trimmed.is_empty() { "0" } else { trimmed };
    (digits.to_owned(), exp)
}

fn scientific(digits: &str, exp: i32) -> String {
    let (first, rest) = digits.split_at(1);
    let fraction = if rest.is_empty() {
        String::new()
    } else {
        format!(".{rest}")
    };
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{first}{fraction}e{sign}{:02}", exp.abs())
}

fn fixed(digits: &str, dp: i32) -> String {
    let nd = digits.len() as i32;
    if dp <= 0 {
        format!("0.{}{digits}", "0".repeat((-dp) as usize))
    } else if dp >= nd {
        format!("{digits}{}", "0".repeat((dp - nd) as usize))
    } else {
        let (int, frac) = digits.split_at(dp as usize);
        format!("{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::g;

    #[test]
    fn shortest_form_matches_go() {
        assert_eq!(g(0.0, None), "0");
        assert_eq!(g(1.0, None), "1");
        assert_eq!(g(0.5, None), "0.5");
        assert_eq!(g(0.052549016, None), "0.052549016");
        assert_eq!(g(8.4583e-05, None), "8.4583e-05");
        assert_eq!(g(0.0001, None), "0.0001");
        assert_eq!(g(123456.0, None), "123456");
        assert_eq!(g(1234567.0, None), "1.234567e+06");
        assert_eq!(g(99.9, None), "99.9");
        assert_eq!(g(-2.5, None), "-2.5");
        assert_eq!(g(1e21, None), "1e+21");
    }

    #[test]
    fn precision_forms_match_go() {
        assert_eq!(g(0.060587641, Some(8)), "0.060587641");
        assert_eq!(g(0.006564123, Some(4)), "0.006564");
        assert_eq!(g(2.42350566, Some(9)), "2.42350566");
        assert_eq!(g(0.0562745, Some(6)), "0.0562745");
        assert_eq!(g(0.0898933123, Some(6)), "0.0898933");
        assert_eq!(g(12565.2, Some(6)), "12565.2");
        assert_eq!(g(1234567.0, Some(6)), "1.23457e+06");
        assert_eq!(g(502608.0, Some(9)), "502608");
        assert_eq!(g(301.94, Some(4)), "301.9");
        assert_eq!(g(15.77, Some(4)), "15.77");
        assert_eq!(g(100.0, Some(6)), "100");
        assert_eq!(g(3.0e-5, Some(6)), "3e-05");
        assert_eq!(g(0.001, Some(6)), "0.001");
    }
}
