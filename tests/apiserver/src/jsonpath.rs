//! The simple JSONPath that CRD `additionalPrinterColumns` use, e.g. `.spec.thingName` or
//! `.status.conditions[?(@.type=="Ready")].status`: field steps, `['quoted']` steps, indexes
//! (negative from the end), `[*]`, and filters comparing a relative path with a literal.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    Wildcard,
    Filter(Filter),
}

#[derive(Clone, Debug, PartialEq)]
struct Filter {
    path: Vec<Step>,
    /// `None`: the filter only asks that the path exists.
    test: Option<(Op, Value)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed path, evaluated against JSON values.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

impl JsonPath {
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let mut t = text.trim();
        if let Some(inner) = t.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            t = inner.trim();
        }
        let mut parser = Parser {
            chars: t.chars().collect(),
            pos: 0,
        };
        let steps = parser.steps(false)?;
        if parser.pos != parser.chars.len() {
            return Err(format!(
                "unexpected {:?} in JSONPath {text:?}",
                parser.rest()
            ));
        }
        Ok(JsonPath { steps })
    }

    /// Every value the path selects, in document order.
    pub fn find<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        select(&self.steps, root)
    }
}

fn select<'a>(steps: &[Step], root: &'a Value) -> Vec<&'a Value> {
    let mut current = vec![root];
    for step in steps {
        let mut next = Vec::new();
        for value in current {
            match step {
                Step::Field(name) => {
                    if let Some(v) = value.get(name.as_str()) {
                        next.push(v);
                    }
                }
                Step::Index(i) => {
                    if let Some(items) = value.as_array() {
                        let idx = if *i < 0 { items.len() as i64 + i } else { *i };
                        if idx >= 0 {
                            if let Some(v) = items.get(idx as usize) {
                                next.push(v);
                            }
                        }
                    }
                }
                Step::Wildcard => match value {
                    Value::Array(items) => next.extend(items.iter()),
                    Value::Object(map) => next.extend(map.values()),
                    _ => {}
                },
                Step::Filter(filter) => {
                    let candidates: Vec<&Value> = match value {
                        Value::Array(items) => items.iter().collect(),
                        other => vec![other],
                    };
                    for item in candidates {
                        if filter.matches(item) {
                            next.push(item);
                        }
                    }
                }
            }
        }
        current = next;
    }
    current
}

impl Filter {
    fn matches(&self, item: &Value) -> bool {
        let found = select(&self.path, item);
        match &self.test {
            None => !found.is_empty(),
            Some((op, literal)) => found.iter().any(|v| compare(v, *op, literal)),
        }
    }
}

fn compare(left: &Value, op: Op, right: &Value) -> bool {
    let ordering = match (left, right) {
        (Value::Number(a), Value::Number(b)) => a.as_f64().partial_cmp(&b.as_f64()),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (a, b) => {
            return match op {
                Op::Eq => a == b,
                Op::Ne => a != b,
                _ => false,
            }
        }
    };
    let Some(ordering) = ordering else {
        return false;
    };
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => ordering == Equal,
        Op::Ne => ordering != Equal,
        Op::Lt => ordering == Less,
        Op::Le => ordering != Greater,
        Op::Gt => ordering == Greater,
        Op::Ge => ordering != Less,
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn rest(&self) -> String {
        self.chars[self.pos..].iter().collect()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Steps until the end, or (inside a filter) until an operator or `)`.
    fn steps(&mut self, in_filter: bool) -> Result<Vec<Step>, String> {
        let mut steps = Vec::new();
        // A leading `$` or `@` names the root.
        if matches!(self.peek(), Some('$') | Some('@')) {
            self.pos += 1;
        }
        loop {
            match self.peek() {
                None => break,
                Some('.') => {
                    self.pos += 1;
                    if self.peek() == Some('*') {
                        self.pos += 1;
                        steps.push(Step::Wildcard);
                        continue;
                    }
                    let name = self.identifier();
                    if name.is_empty() {
                        // A lone `.` is the root itself.
                        if steps.is_empty() && self.peek().is_none() {
                            break;
                        }
                        if self.peek() == Some('[') {
                            continue;
                        }
                        return Err(format!("empty field name before {:?}", self.rest()));
                    }
                    steps.push(Step::Field(name));
                }
                Some('[') => {
                    self.pos += 1;
                    steps.push(self.bracket()?);
                }
                Some(c) if in_filter && (c.is_whitespace() || "=!<>)".contains(c)) => break,
                Some(_) if steps.is_empty() && !in_filter => {
                    // `metadata.name` without the leading dot.
                    let name = self.identifier();
                    if name.is_empty() {
                        return Err(format!("unexpected {:?}", self.rest()));
                    }
                    steps.push(Step::Field(name));
                }
                Some(_) => return Err(format!("unexpected {:?}", self.rest())),
            }
        }
        Ok(steps)
    }

    fn identifier(&mut self) -> String {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '/')
        {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn bracket(&mut self) -> Result<Step, String> {
        self.skip_spaces();
        let step = match self.peek() {
            Some('*') => {
                self.pos += 1;
                Step::Wildcard
            }
            Some('\'') | Some('"') => Step::Field(self.quoted()?),
            Some('?') => {
                self.pos += 1;
                self.skip_spaces();
                self.expect('(')?;
                self.skip_spaces();
                let path = self.steps(true)?;
                self.skip_spaces();
                let test = if self.peek() == Some(')') {
                    None
                } else {
                    let op = self.operator()?;
                    self.skip_spaces();
                    let literal = self.literal()?;
                    Some((op, literal))
                };
                self.skip_spaces();
                self.expect(')')?;
                Step::Filter(Filter { path, test })
            }
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c == '-' || c.is_ascii_digit()) {
                    self.pos += 1;
                }
                let digits: String = self.chars[start..self.pos].iter().collect();
                let index = digits
                    .parse::<i64>()
                    .map_err(|_| format!("unsupported bracket expression at {:?}", self.rest()))?;
                Step::Index(index)
            }
        };
        self.skip_spaces();
        self.expect(']')?;
        Ok(step)
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected {c:?} at {:?}", self.rest()))
        }
    }

    fn quoted(&mut self) -> Result<String, String> {
        let quote = self.peek().ok_or("expected a quote")?;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err("unterminated string".into()),
                Some('\\') => {
                    self.pos += 1;
                    if let Some(c) = self.peek() {
                        out.push(c);
                        self.pos += 1;
                    }
                }
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn operator(&mut self) -> Result<Op, String> {
        let two: String = self.chars[self.pos..(self.pos + 2).min(self.chars.len())]
            .iter()
            .collect();
        let (op, len) = match two.as_str() {
            "==" => (Op::Eq, 2),
            "!=" => (Op::Ne, 2),
            "<=" => (Op::Le, 2),
            ">=" => (Op::Ge, 2),
            _ => match self.peek() {
                Some('<') => (Op::Lt, 1),
                Some('>') => (Op::Gt, 1),
                Some('=') => (Op::Eq, 1),
                _ => return Err(format!("expected an operator at {:?}", self.rest())),
            },
        };
        self.pos += len;
        Ok(op)
    }

    fn literal(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some('\'') | Some('"') => Ok(Value::String(self.quoted()?)),
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| !c.is_whitespace() && c != ')') {
                    self.pos += 1;
                }
                let word: String = self.chars[start..self.pos].iter().collect();
                serde_json::from_str(&word).map_err(|_| format!("bad literal {word:?}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn find(path: &str, doc: &Value) -> Vec<Value> {
        JsonPath::parse(path)
            .unwrap()
            .find(doc)
            .into_iter()
            .cloned()
            .collect()
    }

    #[test]
    fn fields_indexes_and_filters() {
        let doc = json!({
            "spec": {"thingName": "lamp", "list": [1, 2, 3]},
            "status": {"conditions": [
                {"type": "Synced", "status": "True"},
                {"type": "Ready", "status": "False"}
            ]}
        });
        assert_eq!(find(".spec.thingName", &doc), vec![json!("lamp")]);
        assert_eq!(find("{.spec.thingName}", &doc), vec![json!("lamp")]);
        assert_eq!(find(".spec['thingName']", &doc), vec![json!("lamp")]);
        assert_eq!(find(".spec.list[1]", &doc), vec![json!(2)]);
        assert_eq!(find(".spec.list[-1]", &doc), vec![json!(3)]);
        assert_eq!(find(".spec.list[*]", &doc).len(), 3);
        assert_eq!(
            find(r#".status.conditions[?(@.type=="Ready")].status"#, &doc),
            vec![json!("False")]
        );
        assert_eq!(
            find(".status.conditions[?(@.type == 'Synced')].status", &doc),
            vec![json!("True")]
        );
        assert!(find(".status.missing", &doc).is_empty());
        assert!(find(r#".status.conditions[?(@.type=="Nope")].status"#, &doc).is_empty());
    }

    #[test]
    fn rejects_garbage() {
        assert!(JsonPath::parse(".spec[").is_err());
        assert!(JsonPath::parse(".spec[?(@.a ~ 1)]").is_err());
    }
}
