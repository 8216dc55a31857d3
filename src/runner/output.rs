//! `$GITHUB_OUTPUT` file-command encoding: `name<<DELIM` … `DELIM`, with a
//! fresh random delimiter per value (regenerated if the value contains it).

use super::commands::fresh_token;

/// Encodes one output for the file command.
pub fn encode(name: &str, value: &str) -> String {
    let delim = fresh_token("ghadelimiter_", value);
    format!("{name}<<{delim}\n{value}\n{delim}\n")
}

/// Parses a file-command file the way the runner does; used by tests and
/// by the runner-faithful checks.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if let Some((name, delim)) = line.split_once("<<") {
            let mut value = Vec::new();
            loop {
                let Some(l) = lines.next() else {
                    return Err(format!("output {name}: delimiter {delim} not found"));
                };
                let l = l.strip_suffix('\r').unwrap_or(l);
                if l == delim {
                    break;
                }
                value.push(l);
            }
            out.push((name.to_string(), value.join("\n")));
        } else if let Some((name, value)) = line.split_once('=') {
            out.push((name.to_string(), value.to_string()));
        } else {
            return Err(format!("invalid line: {line}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_multiline_and_naive_delimiters() {
        let tricky = "line1\nEOF\nghadelimiter_\n<<EOF";
        let text = encode("a", tricky) + &encode("b", "plain");
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed, vec![("a".into(), tricky.into()), ("b".into(), "plain".into())]);
    }
}
