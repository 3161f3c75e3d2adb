//! The examples' command lines: `--flag value` pairs, read in order.

use std::error::Error;

/// The `--flag value` pairs of this program's command line, in order; an error for a flag
/// without a value.
pub fn flag_values() -> Result<Vec<(String, String)>, Box<dyn Error>> {
    let mut pairs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        pairs.push((flag, value));
    }
    Ok(pairs)
}

/// The error for an unknown `flag`, listing the `options` there are.
pub fn unknown_option(flag: &str, options: &str) -> Box<dyn Error> {
    format!("unknown option {flag} (options: {options})").into()
}

/// What `value` names among `choices` (name, meaning); else an error naming the `what`
/// and the choices.
pub fn choose<T: Copy>(
    what: &str,
    value: &str,
    choices: &[(&str, T)],
) -> Result<T, Box<dyn Error>> {
    if let Some(&(_, meaning)) = choices.iter().find(|(name, _)| *name == value) {
        return Ok(meaning);
    }
    let names: Vec<&str> = choices.iter().map(|&(name, _)| name).collect();
    let listed = match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(format!("unknown {what} {value}: use {listed}").into())
}
