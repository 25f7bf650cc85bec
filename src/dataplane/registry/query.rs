//! The fleet-indexing query language (AWS IoT developer guide, "Query syntax"): the part
//! this registry runs, and a clear `InvalidQueryException` for the rest.
//!
//! Supported:
//! - fields `thingName`, `thingId`, `thingGroupNames` (a thing matches when any of the
//!   groups it was added to matches) and `attributes.NAME`; field names are case
//!   sensitive, values are not (as AWS searches);
//! - values with wildcards `*` (any run, also empty) and `?` (one character) anywhere,
//!   e.g. `thingName:lamp-*`; `"quoted phrases"` match exactly; `\` escapes the next
//!   character; a lone `*` matches every thing;
//! - `AND`, `OR`, `NOT` (upper case) and `-term` for NOT; terms side by side are joined
//!   by AND (AWS's default operator); NOT binds tighter than AND, AND than OR;
//! - parentheses, and field grouping: `thingName:(lamp-* AND -lamp-9)`;
//! - AWS's limits: at most 12 terms; at most one term with a leading wildcard, and then
//!   at most 100 characters.
//!
//! Refused with `InvalidQueryException`: terms without a field (AWS searches every
//! field), other fields (`thingTypeName`, `shadow.*`, `connectivity.*`, ...: this
//! registry indexes none of them), ranges (`[a TO b]`, `{a TO b}`), comparisons (`<`,
//! `>`), fuzzy (`~`), boosting (`^`), `+`, `&&`, `||`, `!`, and the special characters
//! AWS refuses unescaped (`` ` @ # % / ' ; , ``).

use super::Attributes;
use crate::dataplane::{DataPlaneError, ErrorKind};

/// Most terms in one query.
pub const MAX_TERMS: usize = 12;
/// Longest query that has a leading wildcard.
pub const MAX_LEADING_WILDCARD_QUERY: usize = 100;

fn invalid_query(message: impl Into<String>) -> DataPlaneError {
    DataPlaneError::new(ErrorKind::InvalidQuery, message)
}

/// One piece of a value pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece {
    /// A literal character, lower-cased.
    Char(char),
    /// `*`: any run of characters, also none.
    AnyRun,
    /// `?`: exactly one character.
    AnyOne,
}

/// A value pattern (case-insensitive).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern(Vec<Piece>);

impl Pattern {
    fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
        let pattern = &self.0;
        let (mut p, mut t) = (0, 0);
        // The last `*` seen and the text position it was tried at: on a mismatch the
        // star takes one more character.
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match pattern.get(p) {
                Some(Piece::AnyRun) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(Piece::AnyOne) => {
                    p += 1;
                    t += 1;
                }
                Some(Piece::Char(c)) if *c == text[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((star_p, star_t)) => {
                        p = star_p + 1;
                        t = star_t + 1;
                        star = Some((star_p, star_t + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|piece| *piece == Piece::AnyRun)
    }

    fn is_match_all(&self) -> bool {
        self.0 == [Piece::AnyRun]
    }

    fn has_leading_wildcard(&self) -> bool {
        !self.is_match_all() && matches!(self.0.first(), Some(Piece::AnyRun | Piece::AnyOne))
    }
}

/// A searchable field.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Field {
    ThingName,
    ThingId,
    ThingGroupNames,
    Attribute(String),
}

impl Field {
    fn parse(name: &str) -> Result<Field, DataPlaneError> {
        match name {
            "thingName" => Ok(Field::ThingName),
            "thingId" => Ok(Field::ThingId),
            "thingGroupNames" => Ok(Field::ThingGroupNames),
            _ => match name.strip_prefix("attributes.") {
                Some(key) if !key.is_empty() => Ok(Field::Attribute(key.to_string())),
                _ => Err(invalid_query(format!(
                    "Field '{name}' is not searchable in this registry's index; supported: \
                     thingName, thingId, thingGroupNames, attributes.NAME"
                ))),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    All,
    Term(Field, Pattern),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

/// What a query sees of a thing.
#[derive(Clone, Copy, Debug)]
pub struct ThingView<'a> {
    pub name: &'a str,
    pub id: &'a str,
    pub attributes: &'a Attributes,
    pub groups: &'a [String],
}

impl Expr {
    fn matches(&self, thing: &ThingView<'_>) -> bool {
        match self {
            Expr::All => true,
            Expr::Term(field, pattern) => match field {
                Field::ThingName => pattern.matches(thing.name),
                Field::ThingId => pattern.matches(thing.id),
                Field::ThingGroupNames => thing.groups.iter().any(|g| pattern.matches(g)),
                Field::Attribute(key) => thing
                    .attributes
                    .get(key)
                    .is_some_and(|value| pattern.matches(value)),
            },
            Expr::Not(inner) => !inner.matches(thing),
            Expr::And(parts) => parts.iter().all(|p| p.matches(thing)),
            Expr::Or(parts) => parts.iter().any(|p| p.matches(thing)),
        }
    }
}

/// A parsed query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    expr: Expr,
}

impl Query {
    /// Parses `text`, or says what in it this index cannot run.
    pub fn parse(text: &str) -> Result<Query, DataPlaneError> {
        if text.is_empty() {
            return Err(DataPlaneError::new(
                ErrorKind::InvalidRequest,
                "queryString must not be empty",
            ));
        }
        let tokens = lex(text)?;
        if tokens.is_empty() {
            return Err(invalid_query("The query has no terms"));
        }
        let terms: Vec<&Pattern> = tokens
            .iter()
            .filter_map(|t| match t {
                Token::Term { value, .. } => Some(value),
                _ => None,
            })
            .collect();
        if terms.len() > MAX_TERMS {
            return Err(invalid_query(format!(
                "The query has {} terms; at most {MAX_TERMS} are allowed",
                terms.len()
            )));
        }
        let leading = terms.iter().filter(|p| p.has_leading_wildcard()).count();
        if leading > 1 {
            return Err(invalid_query(
                "Only one term of a query may start with a wildcard",
            ));
        }
        if leading == 1 && text.chars().count() > MAX_LEADING_WILDCARD_QUERY {
            return Err(invalid_query(format!(
                "A query with a leading wildcard may be at most {MAX_LEADING_WILDCARD_QUERY} characters"
            )));
        }
        let mut parser = Parser { tokens, pos: 0 };
        let expr = parser.or(None)?;
        match parser.tokens.get(parser.pos) {
            None => Ok(Query { expr }),
            Some(token) => Err(invalid_query(format!(
                "Unexpected {} in the query",
                token.describe()
            ))),
        }
    }

    pub fn matches(&self, thing: &ThingView<'_>) -> bool {
        self.expr.matches(thing)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    LParen,
    RParen,
    And,
    Or,
    Not,
    /// `-` before a term or group: NOT.
    Minus,
    /// `field:` right before `(`: field grouping.
    FieldOpen(String),
    Term {
        field: Option<String>,
        value: Pattern,
    },
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::LParen => "'('".into(),
            Token::RParen => "')'".into(),
            Token::And => "AND".into(),
            Token::Or => "OR".into(),
            Token::Not => "NOT".into(),
            Token::Minus => "'-'".into(),
            Token::FieldOpen(field) => format!("'{field}:('"),
            Token::Term { .. } => "term".into(),
        }
    }
}

/// Characters AWS refuses unescaped, and operators this index does not run.
fn refused(c: char) -> Option<&'static str> {
    Some(match c {
        '[' | ']' | '{' | '}' => "range searches are not supported",
        '<' | '>' => "comparisons are not supported",
        '~' => "fuzzy and proximity searches are not supported",
        '^' => "boosting is not supported",
        '+' => "the '+' (required) operator is not supported; terms are joined by AND",
        '&' | '|' | '!' => "use AND, OR and NOT",
        '`' | '@' | '#' | '%' | '/' | '\'' | ';' | ',' => {
            "this special character is not supported unescaped (escape it with \\)"
        }
        _ => return None,
    })
}

fn lex(text: &str) -> Result<Vec<Token>, DataPlaneError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        match c {
            '(' => {
                tokens.push(Token::LParen);
                i += 1;
            }
            ')' => {
                tokens.push(Token::RParen);
                i += 1;
            }
            '-' => {
                if chars.get(i + 1).is_none_or(|n| n.is_whitespace()) {
                    return Err(invalid_query("A '-' must stand right before a term"));
                }
                tokens.push(Token::Minus);
                i += 1;
            }
            '"' => {
                let (value, next) = phrase(&chars, i)?;
                tokens.push(Token::Term { field: None, value });
                i = next;
            }
            _ => {
                let (token, next) = word(&chars, i)?;
                tokens.push(token);
                i = next;
            }
        }
    }
    Ok(tokens)
}

/// A `"phrase"` starting at `start`: an exact value. Returns it and the index after it.
fn phrase(chars: &[char], start: usize) -> Result<(Pattern, usize), DataPlaneError> {
    let mut pieces = Vec::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => return Err(invalid_query("A quoted phrase is not closed")),
            Some('"') => return Ok((Pattern(pieces), i + 1)),
            Some('\\') => {
                let escaped = chars
                    .get(i + 1)
                    .ok_or_else(|| invalid_query("The query ends with '\\'"))?;
                pieces.extend(escaped.to_lowercase().map(Piece::Char));
                i += 2;
            }
            Some(c) => {
                pieces.extend(c.to_lowercase().map(Piece::Char));
                i += 1;
            }
        }
    }
}

/// A word starting at `start`: an operator, `field:value`, `field:(`, `field:"phrase"` or
/// a bare value. Returns the token and the index after it.
fn word(chars: &[char], start: usize) -> Result<(Token, usize), DataPlaneError> {
    let mut field: Option<String> = None;
    let mut raw = String::new();
    let mut pieces = Vec::new();
    let mut escaped_any = false;
    let mut i = start;
    while let Some(&c) = chars.get(i) {
        if c.is_whitespace() || c == '(' || c == ')' || c == '"' {
            break;
        }
        match c {
            '\\' => {
                let escaped = *chars
                    .get(i + 1)
                    .ok_or_else(|| invalid_query("The query ends with '\\'"))?;
                raw.push(escaped);
                pieces.extend(escaped.to_lowercase().map(Piece::Char));
                escaped_any = true;
                i += 2;
                continue;
            }
            ':' if field.is_none() => {
                if raw.is_empty()
                    || escaped_any
                    || pieces.iter().any(|p| !matches!(p, Piece::Char(_)))
                {
                    return Err(invalid_query(format!(
                        "Invalid field name before ':' in '{}'",
                        chars[start..=i].iter().collect::<String>()
                    )));
                }
                field = Some(std::mem::take(&mut raw));
                pieces.clear();
                i += 1;
                match chars.get(i) {
                    Some('(') => {
                        let field = field.unwrap_or_default();
                        Field::parse(&field)?;
                        return Ok((Token::FieldOpen(field), i));
                    }
                    Some('"') => {
                        let (value, next) = phrase(chars, i)?;
                        let field = field.unwrap_or_default();
                        Field::parse(&field)?;
                        return Ok((
                            Token::Term {
                                field: Some(field),
                                value,
                            },
                            next,
                        ));
                    }
                    _ => continue,
                }
            }
            '*' => pieces.push(Piece::AnyRun),
            '?' => pieces.push(Piece::AnyOne),
            other => {
                if let Some(why) = refused(other) {
                    return Err(invalid_query(format!("'{other}' in the query: {why}")));
                }
                pieces.extend(other.to_lowercase().map(Piece::Char));
            }
        }
        raw.push(c);
        i += 1;
    }
    if field.is_none() && !escaped_any {
        match raw.as_str() {
            "AND" => return Ok((Token::And, i)),
            "OR" => return Ok((Token::Or, i)),
            "NOT" => return Ok((Token::Not, i)),
            _ => {}
        }
    }
    if let Some(name) = &field {
        Field::parse(name)?;
        if pieces.is_empty() {
            return Err(invalid_query(format!("Field '{name}' has no value")));
        }
    }
    Ok((
        Token::Term {
            field,
            value: Pattern(pieces),
        },
        i,
    ))
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn or(&mut self, field: Option<&str>) -> Result<Expr, DataPlaneError> {
        let mut parts = vec![self.and(field)?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            parts.push(self.and(field)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self, field: Option<&str>) -> Result<Expr, DataPlaneError> {
        let mut parts = vec![self.unary(field)?];
        loop {
            match self.peek() {
                None | Some(Token::RParen) | Some(Token::Or) => break,
                Some(Token::And) => {
                    self.pos += 1;
                    parts.push(self.unary(field)?);
                }
                // AWS's default operator.
                Some(_) => parts.push(self.unary(field)?),
            }
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    fn unary(&mut self, field: Option<&str>) -> Result<Expr, DataPlaneError> {
        match self.peek() {
            Some(Token::Not) | Some(Token::Minus) => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary(field)?)))
            }
            _ => self.primary(field),
        }
    }

    fn primary(&mut self, field: Option<&str>) -> Result<Expr, DataPlaneError> {
        match self.next() {
            Some(Token::LParen) => {
                let expr = self.or(field)?;
                self.close()?;
                Ok(expr)
            }
            Some(Token::FieldOpen(name)) => {
                // The lexer left the '(' for us.
                match self.next() {
                    Some(Token::LParen) => {}
                    _ => return Err(invalid_query(format!("Expected '(' after '{name}:'"))),
                }
                let expr = self.or(Some(&name))?;
                self.close()?;
                Ok(expr)
            }
            Some(Token::Term { field: own, value }) => match own.as_deref().or(field) {
                Some(name) => Ok(Expr::Term(Field::parse(name)?, value)),
                None if value.is_match_all() => Ok(Expr::All),
                None => Err(invalid_query(
                    "A term without a field (searching every field) is not supported here: \
                     name the field, as in thingName:VALUE or attributes.NAME:VALUE",
                )),
            },
            Some(other) => Err(invalid_query(format!(
                "Unexpected {} in the query",
                other.describe()
            ))),
            None => Err(invalid_query("The query ends where a term was expected")),
        }
    }

    fn close(&mut self) -> Result<(), DataPlaneError> {
        match self.next() {
            Some(Token::RParen) => Ok(()),
            _ => Err(invalid_query("A '(' is not closed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Thing {
        name: &'static str,
        id: &'static str,
        attributes: Attributes,
        groups: Vec<String>,
    }

    impl Thing {
        fn view(&self) -> ThingView<'_> {
            ThingView {
                name: self.name,
                id: self.id,
                attributes: &self.attributes,
                groups: &self.groups,
            }
        }
    }

    fn fleet() -> Vec<Thing> {
        let thing = |name, id, attrs: &[(&str, &str)], groups: &[&str]| Thing {
            name,
            id,
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        vec![
            thing(
                "lamp-1",
                "id-1",
                &[("color", "red"), ("floor", "2")],
                &["canary"],
            ),
            thing("lamp-2", "id-2", &[("color", "blue")], &["wave-1"]),
            thing("Lamp-3", "id-3", &[("color", "red")], &[]),
            thing("plug:9", "id-9", &[], &["canary", "plugs"]),
        ]
    }

    fn names(query: &str) -> Vec<&'static str> {
        let query = Query::parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        fleet()
            .iter()
            .filter(|t| query.matches(&t.view()))
            .map(|t| t.name)
            .collect()
    }

    #[test]
    fn fields_and_wildcards() {
        assert_eq!(names("thingName:lamp-1"), ["lamp-1"]);
        assert_eq!(names("thingName:lamp-*"), ["lamp-1", "lamp-2", "Lamp-3"]);
        assert_eq!(names("thingName:lamp-?"), ["lamp-1", "lamp-2", "Lamp-3"]);
        assert_eq!(names("thingName:*:9"), ["plug:9"]);
        assert_eq!(names("thingName:plug\\:9"), ["plug:9"]);
        assert_eq!(names("thingName:plug:9"), ["plug:9"]);
        assert_eq!(names("thingId:id-2"), ["lamp-2"]);
        assert_eq!(names("thingGroupNames:canary"), ["lamp-1", "plug:9"]);
        assert_eq!(names("thingGroupNames:wave-*"), ["lamp-2"]);
        assert_eq!(names("attributes.color:red"), ["lamp-1", "Lamp-3"]);
        assert_eq!(names("attributes.floor:*"), ["lamp-1"]);
        assert_eq!(names("attributes.color:\"RED\""), ["lamp-1", "Lamp-3"]);
        assert_eq!(names("*").len(), 4);
        assert!(names("thingName:lamp").is_empty());
        assert!(names("attributes.nope:red").is_empty());
    }

    #[test]
    fn values_are_case_insensitive_field_names_are_not() {
        assert_eq!(names("thingName:LAMP-3"), ["Lamp-3"]);
        assert_eq!(names("attributes.color:Blue"), ["lamp-2"]);
        let err = Query::parse("ThingName:lamp-1").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidQuery);
        assert!(err.message.contains("ThingName"), "{}", err.message);
    }

    #[test]
    fn boolean_operators_and_grouping() {
        assert_eq!(
            names("thingName:lamp-* AND attributes.color:red"),
            ["lamp-1", "Lamp-3"]
        );
        // AND is the default operator.
        assert_eq!(
            names("thingName:lamp-* attributes.color:red"),
            ["lamp-1", "Lamp-3"]
        );
        assert_eq!(
            names("thingName:lamp-2 OR thingGroupNames:plugs"),
            ["lamp-2", "plug:9"]
        );
        assert_eq!(
            names("thingName:lamp-* AND NOT attributes.color:red"),
            ["lamp-2"]
        );
        assert_eq!(names("thingName:lamp-* -attributes.color:red"), ["lamp-2"]);
        assert_eq!(names("NOT thingName:lamp-*"), ["plug:9"]);
        // AND binds tighter than OR.
        assert_eq!(
            names("thingName:plug* OR thingName:lamp-* AND attributes.color:blue"),
            ["lamp-2", "plug:9"]
        );
        assert_eq!(
            names("(thingName:plug* OR thingName:lamp-*) AND thingGroupNames:canary"),
            ["lamp-1", "plug:9"]
        );
        assert_eq!(
            names("thingName:(lamp-* AND -lamp-1)"),
            ["lamp-2", "Lamp-3"]
        );
        assert_eq!(
            names("thingName:(lamp-1 OR plug*) attributes.color:red"),
            ["lamp-1"]
        );
    }

    fn refused(query: &str) -> DataPlaneError {
        match Query::parse(query) {
            Ok(parsed) => panic!("{query} was accepted: {parsed:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn what_is_not_supported_is_refused_clearly() {
        for (query, says) in [
            ("lamp-1", "without a field"),
            ("thingTypeName:lamp", "thingTypeName"),
            ("shadow.reported.power:on", "shadow.reported.power"),
            ("connectivity.connected:true", "connectivity.connected"),
            ("attributes.:x", "attributes."),
            ("attributes.floor:[1 TO 3]", "range"),
            ("attributes.floor>2", "comparisons"),
            ("thingName:lamp~", "fuzzy"),
            ("thingName:lamp^2", "boosting"),
            ("+thingName:lamp", "required"),
            ("thingName:a && thingName:b", "AND, OR and NOT"),
            ("attributes.path:a/b", "special character"),
            ("thingName:", "no value"),
            ("thingName:(lamp", "not closed"),
            ("thingName:lamp)", "Unexpected ')'"),
            ("AND thingName:lamp", "Unexpected AND"),
            ("thingName:lamp OR", "ends where a term"),
            ("thingName:\"lamp", "not closed"),
            ("thingName:lamp - x", "'-'"),
            ("   ", "no terms"),
            ("thingName:*a OR thingId:*b", "one term"),
        ] {
            let err = refused(query);
            assert_eq!(err.kind, ErrorKind::InvalidQuery, "{query}: {err}");
            assert!(err.message.contains(says), "{query}: {}", err.message);
        }
        assert_eq!(refused("").kind, ErrorKind::InvalidRequest);
        let thirteen = vec!["thingName:a"; 13].join(" OR ");
        assert!(refused(&thirteen).message.contains("13 terms"));
        let long = format!("thingName:*x OR thingId:{}", "y".repeat(90));
        assert!(refused(&long).message.contains("100 characters"));
        // Escaped, the special characters are literal.
        assert!(Query::parse("attributes.path:a\\/b").is_ok());
    }

    #[test]
    fn pattern_matching_backtracks() {
        let p = |s: &str| match lex(&format!("thingName:{s}")).unwrap().remove(0) {
            Token::Term { value, .. } => value,
            other => panic!("{other:?}"),
        };
        assert!(p("a*b*c").matches("aXbYbZc"));
        assert!(!p("a*b*c").matches("aXbYbZ"));
        assert!(p("*").matches(""));
        assert!(p("**a").matches("a"));
        assert!(!p("?").matches(""));
        assert!(p("a?c").matches("abc"));
    }
}
