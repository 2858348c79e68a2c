//! JSONC, as Azure Resource Manager reads deployment bodies: `az deployment group create
//! --template-file` splices the template file in verbatim, after an unquoted `template:`
//! key, so comments (`//`, `/* */`), unquoted property names and trailing commas arrive
//! as the user wrote them. [`to_json`] rewrites such text into plain JSON; strings are
//! copied untouched, and anything else is left for the JSON parser to judge.
//!
//! Input is untrusted: one linear pass, no recursion, every failure an error.

/// Plain JSON for `input`, or why it cannot be read (an unterminated string or comment).
pub fn to_json(input: &str) -> Result<String, String> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = String::with_capacity(input.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' => {
                let end = string_end(&chars, i)?;
                out.extend(&chars[i..=end]);
                i = end + 1;
            }
            '/' if matches!(chars.get(i + 1), Some('/') | Some('*')) => {
                i = comment_end(&chars, i)?;
                out.push(' ');
            }
            ',' => {
                // A comma before a closing bracket is dropped.
                let next = skip_blank(&chars, i + 1)?;
                if !matches!(chars.get(next), Some('}') | Some(']')) {
                    out.push(',');
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == '$' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '$')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let follows = skip_blank(&chars, i)?;
                // Only a property name (a word before ':' right after '{' or ',') is quoted;
                // `true`, `1e5` and the like stay as they are.
                let before = out.trim_end().chars().last();
                let is_key = chars.get(follows) == Some(&':')
                    && matches!(before, Some('{') | Some(','))
                    && !chars[..start].last().is_some_and(char::is_ascii_digit);
                if is_key {
                    out.push('"');
                    out.push_str(&word);
                    out.push('"');
                } else {
                    out.push_str(&word);
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The index of the quote closing the string that opens at `start`.
fn string_end(chars: &[char], start: usize) -> Result<usize, String> {
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return Ok(i),
            _ => i += 1,
        }
    }
    Err(format!(
        "a string opened at character {start} is never closed"
    ))
}

/// The index just after the comment that opens at `start`.
fn comment_end(chars: &[char], start: usize) -> Result<usize, String> {
    if chars.get(start + 1) == Some(&'/') {
        let mut i = start + 2;
        while i < chars.len() && chars[i] != '\n' {
            i += 1;
        }
        return Ok(i);
    }
    let mut i = start + 2;
    while i + 1 < chars.len() {
        if chars[i] == '*' && chars[i + 1] == '/' {
            return Ok(i + 2);
        }
        i += 1;
    }
    Err(format!(
        "a comment opened at character {start} is never closed"
    ))
}

/// The index of the next character that is neither white space nor in a comment.
fn skip_blank(chars: &[char], mut i: usize) -> Result<usize, String> {
    loop {
        match chars.get(i) {
            Some(c) if c.is_whitespace() => i += 1,
            Some('/') if matches!(chars.get(i + 1), Some('/') | Some('*')) => {
                i = comment_end(chars, i)?;
            }
            _ => return Ok(i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn read(s: &str) -> Value {
        serde_json::from_str(&to_json(s).expect("jsonc")).expect("json")
    }

    #[test]
    fn what_az_sends_is_read_as_arm_reads_it() {
        // az's splice: an unquoted key, then the file as written (comments, trailing commas).
        let body = "{\"properties\": {\"mode\": \"Incremental\", template:{\r\n  // the sets\r\n  \"a\": [1, 2,],\r\n  /* note: \"x\" */ b: \"http://x//y, }\",\r\n  \"c\": {\"d\": true, \"e\": 1e5,},\r\n}}}";
        assert_eq!(
            read(body),
            json!({"properties": {"mode": "Incremental", "template": {"a": [1, 2], "b": "http://x//y, }", "c": {"d": true, "e": 1e5}}}})
        );
        assert_eq!(read("{\"s\": \"a \\\" // b\"}"), json!({"s": "a \" // b"}));
        assert_eq!(read("[true, false, null]"), json!([true, false, null]));
    }

    #[test]
    fn unterminated_pieces_are_errors() {
        assert!(to_json("{\"a\": \"b").is_err());
        assert!(to_json("{/* open").is_err());
    }

    proptest::proptest! {
        #[test]
        fn plain_json_is_unchanged_in_meaning(v in proptest::collection::vec("[a-z\"/,{} ]{0,6}", 0..6)) {
            let doc = serde_json::to_string(&json!({"keys": v, "n": 1.5})).expect("json");
            proptest::prop_assert_eq!(read(&doc), serde_json::from_str::<Value>(&doc).expect("json"));
        }

        #[test]
        fn any_text_is_answered_without_panic(s in "\\PC{0,200}") {
            let _ = to_json(&s);
        }
    }
}
