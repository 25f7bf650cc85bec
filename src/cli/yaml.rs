//! YAML for manifests: read exactly as kubectl (and so the apiserver and the operator)
//! reads it, and written so that kubectl and YAML 1.2 readers read back the same JSON.
//!
//! kubectl, Argo CD, Flux and Helm turn YAML into JSON with sigs.k8s.io/yaml, that is
//! go-yaml v2: YAML 1.1 resolution of plain scalars (`on`, `no`, `y` are booleans, `010` is
//! octal 8, `1_000` is 1000, `0b11` is 3, `.nan` is NaN), keys converted to strings, merge
//! keys (`<<`) honoured, duplicate keys silently overwritten. A YAML 1.2 reader reads the
//! same text differently. Reading a manifest here therefore follows kubectl's pipeline
//! step by step, and refuses, naming the field, every value on which the two readings
//! disagree or which JSON cannot hold, so that a manifest means one thing whichever tool
//! applies it:
//!
//! 1. the text is split into documents the way kubectl's reader splits it: on lines that
//!    start with `---` (anything but a comment after `---` is an error), each line cut at
//!    `\n` with a trailing `\r` dropped; a text starting with `{` is first read as a stream
//!    of JSON objects, as kubectl does;
//! 2. each document is parsed by libyaml (through `unsafe_libyaml`, the C library
//!    translated to Rust that serde_yaml itself runs on): go-yaml v2 is a Go port of the
//!    same library, so both split scalars, fold lines, treat tabs, comments and line
//!    breaks alike, and libyaml tells a quoted scalar from a plain one, which serde_yaml's
//!    own API does not;
//! 3. plain scalars are resolved as go-yaml v2 resolves them, as YAML 1.2's core schema
//!    does and as YAML 1.1's types (yaml.org/type) do; where they differ (`on`, `010`,
//!    `1_000`, `0b11`, `1:20`, `1e3`...), or the value is NaN, an infinity or an integer
//!    beyond 64 bits, the document is refused with the field and what kubectl makes of it;
//! 4. mappings: keys must be strings under both readings; a key set twice is refused
//!    (kubectl keeps the last one silently); `<<` merges as go-yaml merges, except that a
//!    key written before the `<<` that also comes from the merge is refused (go-yaml
//!    keeps the merged value, the YAML merge rule the written one);
//! 5. numbers end as the apiserver stores them: an integral float becomes the integer
//!    Go's JSON encoder writes for it (`1.0` is `1`, `1e3` is `1000`).
//!
//! Quoted and block scalars are always strings; of the explicit tags only `!!str` is
//! accepted. Anchors and aliases are resolved per document, as go-yaml resolves them.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::rc::Rc;

use serde_json::{Map, Value};

/// One document of a manifest text.
#[derive(Debug)]
pub struct Document {
    /// Its position among the documents of the text, from 1.
    pub index: usize,
    /// The document as JSON, `None` when it is empty (kubectl skips those), or why it
    /// cannot be read; a message about a field starts with the field's path.
    pub content: Result<Option<Value>, String>,
}

/// Reads every document of `text` as kubectl reads it. A document that cannot be read
/// does not stop the others, except after a JSON syntax error in a JSON stream.
pub fn read_documents(text: &str) -> Vec<Document> {
    if text.trim_start_matches(is_go_space).starts_with('{') {
        if let Some(documents) = read_json_stream(text) {
            return documents;
        }
    }
    read_yaml_stream(text)
}

// ----------------------------------------------------------------------------------------
// JSON streams

/// A text starting with `{` is a JSON stream for kubectl when its first object is valid
/// JSON; otherwise it is YAML (`None` here).
fn read_json_stream(text: &str) -> Option<Vec<Document>> {
    let mut documents = Vec::new();
    let stream = serde_json::Deserializer::from_str(text).into_iter::<StrictJson>();
    for (i, item) in stream.enumerate() {
        match item {
            Ok(StrictJson(value)) => documents.push(Document {
                index: i + 1,
                content: Ok((!value.is_null()).then_some(value)),
            }),
            Err(err) if i == 0 && err.classify() != serde_json::error::Category::Data => {
                return None
            }
            Err(err) => {
                documents.push(Document {
                    index: i + 1,
                    content: Err(match err.classify() {
                        // Ours: the field first.
                        serde_json::error::Category::Data => err.to_string(),
                        _ => format!("not valid JSON: {err}"),
                    }),
                });
                break;
            }
        }
    }
    Some(documents)
}

/// A JSON value read the way the apiserver reads it under `fieldValidation=Strict`
/// (kubectl's default): a key given twice is an error, an integer beyond int64 is refused
/// (the apiserver keeps it as a float and loses digits), and integral floats become
/// integers.
struct StrictJson(Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(StrictVisitor(String::new()))
            .map(StrictJson)
    }
}

struct StrictVisitor(String);

impl<'de> serde::de::DeserializeSeed<'de> for StrictVisitor {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        if i64::try_from(v).is_err() {
            return Err(E::custom(format!(
                "{}: {v} is beyond the 64-bit integer range: the apiserver keeps it as the float {}, losing digits; write it as a string or a float",
                shown_path(&self.0),
                v as f64
            )));
        }
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(number_as_the_apiserver_keeps_it(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) =
            seq.next_element_seed(StrictVisitor(format!("{}[{}]", self.0, items.len())))?
        {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let path = join(&self.0, &key);
            let value = access.next_value_seed(StrictVisitor(path.clone()))?;
            if map.insert(key, value).is_some() {
                return Err(serde::de::Error::custom(format!(
                    "{path}: duplicate field: the apiserver refuses it"
                )));
            }
        }
        Ok(Value::Object(map))
    }
}

// ----------------------------------------------------------------------------------------
// YAML streams: kubectl's document split, then libyaml

/// kubectl's `YAMLReader`: documents are separated by lines starting with `---`.
fn read_yaml_stream(text: &str) -> Vec<Document> {
    let mut documents = Vec::new();
    let mut chunk = String::new();
    let mut chunk_line = 0;
    let lines: Vec<&str> = {
        let mut lines: Vec<&str> = text.split('\n').collect();
        if text.ends_with('\n') || text.is_empty() {
            lines.pop();
        }
        lines
    };
    for (number, line) in lines.iter().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(rest) = line.strip_prefix("---") {
            let rest = rest.trim_matches(is_go_space);
            if !rest.is_empty() && !rest.starts_with('#') {
                documents.push(Document {
                    index: documents.len() + 1,
                    content: Err(format!(
                        "line {}: {line:?}: kubectl allows only a comment after the document separator ---; put the content on the next line",
                        number + 1
                    )),
                });
                // kubectl stops reading the stream there.
                return documents;
            }
            if !chunk.is_empty() {
                read_chunk(&chunk, chunk_line, &mut documents);
                chunk.clear();
            }
            continue;
        }
        if chunk.is_empty() {
            chunk_line = number;
        }
        chunk.push_str(line);
        chunk.push('\n');
    }
    if !chunk.is_empty() {
        read_chunk(&chunk, chunk_line, &mut documents);
    }
    documents
}

/// One part between separators: kubectl reads its first YAML document only.
fn read_chunk(chunk: &str, first_line: usize, documents: &mut Vec<Document>) {
    let index = documents.len() + 1;
    let at = |mark: libyaml::Mark| format!("line {}", first_line + mark.line + 1);
    let roots = match libyaml::events(chunk.as_bytes()).map_err(|err| {
        format!(
            "not valid YAML: {} column {}: {}{}",
            at(err.mark),
            err.mark.column + 1,
            err.problem,
            err.context.map(|c| format!(" ({c})")).unwrap_or_default()
        )
    }) {
        Ok(events) => compose(events).map_err(|(mark, message)| format!("{}: {message}", at(mark))),
        Err(message) => Err(message),
    };
    let content = match roots {
        Err(message) => Err(message),
        Ok(roots) if roots.is_empty() => return,
        Ok(roots) if roots.len() > 1 => Err(format!(
            "{}: a second YAML document after a document end marker (...) without a --- line: kubectl reads only the first; separate documents with ---",
            at(roots[1].mark())
        )),
        Ok(roots) => Converter::default().document(&roots[0]),
    };
    documents.push(Document { index, content });
}

/// Go's `unicode.IsSpace`.
fn is_go_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | ' ' | '\u{85}' | '\u{A0}'
    ) || (c > '\u{FF}' && c.is_whitespace())
}

// ----------------------------------------------------------------------------------------
// libyaml events

mod libyaml {
    //! The event parser of libyaml, through `unsafe_libyaml`: each event's data is copied
    //! out before the event is freed, and the parser lives in a box that neither moves nor
    //! outlives the input it points into.

    use std::ffi::CStr;
    use std::mem::MaybeUninit;

    use unsafe_libyaml as unsafe_sys;

    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Mark {
        /// From 0.
        pub line: usize,
        /// From 0.
        pub column: usize,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Style {
        Plain,
        SingleQuoted,
        DoubleQuoted,
        Literal,
        Folded,
    }

    #[derive(Debug)]
    pub enum Event {
        DocumentStart,
        DocumentEnd,
        Alias(String),
        Scalar {
            anchor: Option<String>,
            tag: Option<String>,
            value: String,
            style: Style,
            /// A double-quoted scalar whose source uses the `\/` escape.
            escaped_slash: bool,
        },
        SequenceStart {
            anchor: Option<String>,
            tag: Option<String>,
            flow: bool,
        },
        SequenceEnd,
        MappingStart {
            anchor: Option<String>,
            tag: Option<String>,
            flow: bool,
        },
        MappingEnd,
    }

    #[derive(Debug)]
    pub struct Error {
        pub problem: String,
        pub context: Option<String>,
        pub mark: Mark,
    }

    /// Every event of `input` (stream start and end left out), or the first error.
    pub fn events(input: &[u8]) -> Result<Vec<(Event, Mark)>, Error> {
        let mut parser = Box::<unsafe_sys::yaml_parser_t>::new_uninit();
        let parser = parser.as_mut_ptr();
        // SAFETY: `parser` points to a boxed yaml_parser_t that stays in place until it is
        // deleted below; `input` outlives it. Events are read only after a successful
        // `yaml_parser_parse`, which initializes them, and deleted after being copied.
        unsafe {
            if unsafe_sys::yaml_parser_initialize(parser).fail {
                return Err(Error {
                    problem: "cannot allocate the YAML parser".into(),
                    context: None,
                    mark: Mark::default(),
                });
            }
            unsafe_sys::yaml_parser_set_input_string(parser, input.as_ptr(), input.len() as _);
            let mut out = Vec::new();
            let result = loop {
                let mut event = MaybeUninit::<unsafe_sys::yaml_event_t>::uninit();
                let event = event.as_mut_ptr();
                if unsafe_sys::yaml_parser_parse(parser, event).fail {
                    break Err(error(&*parser));
                }
                let mark = Mark {
                    line: (*event).start_mark.line as usize,
                    column: (*event).start_mark.column as usize,
                };
                let raw = input
                    .get((*event).start_mark.index as usize..(*event).end_mark.index as usize)
                    .unwrap_or_default();
                let converted = convert(&*event, raw);
                unsafe_sys::yaml_event_delete(event);
                match converted {
                    Converted::Event(e) => out.push((e, mark)),
                    Converted::Skip => {}
                    Converted::End => break Ok(out),
                }
            };
            unsafe_sys::yaml_parser_delete(parser);
            result
        }
    }

    enum Converted {
        Event(Event),
        Skip,
        End,
    }

    unsafe fn convert(event: &unsafe_sys::yaml_event_t, raw: &[u8]) -> Converted {
        // SAFETY (whole function): the union member read is the one `type_` names.
        unsafe {
            let e = match event.type_ {
                unsafe_sys::YAML_STREAM_START_EVENT => return Converted::Skip,
                unsafe_sys::YAML_STREAM_END_EVENT => return Converted::End,
                unsafe_sys::YAML_DOCUMENT_START_EVENT => Event::DocumentStart,
                unsafe_sys::YAML_DOCUMENT_END_EVENT => Event::DocumentEnd,
                unsafe_sys::YAML_ALIAS_EVENT => {
                    Event::Alias(text(event.data.alias.anchor).unwrap_or_default())
                }
                unsafe_sys::YAML_SCALAR_EVENT => {
                    let s = &event.data.scalar;
                    let bytes = std::slice::from_raw_parts(s.value, s.length as usize);
                    let double = s.style == unsafe_sys::YAML_DOUBLE_QUOTED_SCALAR_STYLE;
                    Event::Scalar {
                        escaped_slash: double && has_escaped_slash(raw),
                        anchor: text(s.anchor),
                        tag: text(s.tag),
                        value: String::from_utf8_lossy(bytes).into_owned(),
                        style: match s.style {
                            unsafe_sys::YAML_SINGLE_QUOTED_SCALAR_STYLE => Style::SingleQuoted,
                            unsafe_sys::YAML_DOUBLE_QUOTED_SCALAR_STYLE => Style::DoubleQuoted,
                            unsafe_sys::YAML_LITERAL_SCALAR_STYLE => Style::Literal,
                            unsafe_sys::YAML_FOLDED_SCALAR_STYLE => Style::Folded,
                            _ => Style::Plain,
                        },
                    }
                }
                unsafe_sys::YAML_SEQUENCE_START_EVENT => {
                    let s = &event.data.sequence_start;
                    Event::SequenceStart {
                        anchor: text(s.anchor),
                        tag: text(s.tag),
                        flow: s.style == unsafe_sys::YAML_FLOW_SEQUENCE_STYLE,
                    }
                }
                unsafe_sys::YAML_SEQUENCE_END_EVENT => Event::SequenceEnd,
                unsafe_sys::YAML_MAPPING_START_EVENT => {
                    let s = &event.data.mapping_start;
                    Event::MappingStart {
                        anchor: text(s.anchor),
                        tag: text(s.tag),
                        flow: s.style == unsafe_sys::YAML_FLOW_MAPPING_STYLE,
                    }
                }
                unsafe_sys::YAML_MAPPING_END_EVENT => Event::MappingEnd,
                _ => return Converted::Skip,
            };
            Converted::Event(e)
        }
    }

    /// Whether the source of a double-quoted scalar has the escape `\/`.
    fn has_escaped_slash(raw: &[u8]) -> bool {
        let mut bytes = raw.iter();
        while let Some(b) = bytes.next() {
            if *b == b'\\' && bytes.next() == Some(&b'/') {
                return true;
            }
        }
        false
    }

    /// A NUL-terminated string of libyaml, if any.
    unsafe fn text(ptr: *const u8) -> Option<String> {
        if ptr.is_null() {
            return None;
        }
        // SAFETY: libyaml's strings are NUL-terminated and live as long as the event.
        let s = unsafe { CStr::from_ptr(ptr.cast()) };
        Some(s.to_string_lossy().into_owned())
    }

    unsafe fn error(parser: &unsafe_sys::yaml_parser_t) -> Error {
        // SAFETY: problem and context are NULL or static NUL-terminated strings.
        unsafe {
            Error {
                problem: text(parser.problem.cast()).unwrap_or_else(|| "unknown error".into()),
                context: text(parser.context.cast()),
                mark: Mark {
                    line: parser.problem_mark.line as usize,
                    column: parser.problem_mark.column as usize,
                },
            }
        }
    }
}

// ----------------------------------------------------------------------------------------
// Nodes: events composed into trees, aliases resolved as go-yaml resolves them

use libyaml::{Event, Mark, Style};

#[derive(Debug)]
enum Node {
    Scalar {
        value: String,
        style: Style,
        tag: Option<String>,
        /// Inside a flow collection (`[...]`, `{...}`).
        in_flow: bool,
        escaped_slash: bool,
        mark: Mark,
    },
    Sequence {
        items: Vec<Rc<Node>>,
        tag: Option<String>,
        mark: Mark,
    },
    Mapping {
        pairs: Vec<(Rc<Node>, Rc<Node>)>,
        tag: Option<String>,
        mark: Mark,
    },
    /// An alias, with the node its anchor names.
    Alias { target: Rc<Node>, mark: Mark },
}

impl Node {
    fn mark(&self) -> Mark {
        match self {
            Node::Scalar { mark, .. }
            | Node::Sequence { mark, .. }
            | Node::Mapping { mark, .. }
            | Node::Alias { mark, .. } => *mark,
        }
    }

    /// The node an alias stands for (itself otherwise).
    fn resolved(self: &Rc<Node>) -> &Rc<Node> {
        match &**self {
            Node::Alias { target, .. } => target.resolved(),
            _ => self,
        }
    }
}

enum Open {
    Sequence {
        items: Vec<Rc<Node>>,
        tag: Option<String>,
        anchor: Option<String>,
        flow: bool,
        mark: Mark,
    },
    Mapping {
        pairs: Vec<(Rc<Node>, Rc<Node>)>,
        key: Option<Rc<Node>>,
        tag: Option<String>,
        anchor: Option<String>,
        flow: bool,
        mark: Mark,
    },
}

/// The root node of each document in the events.
fn compose(events: Vec<(Event, Mark)>) -> Result<Vec<Rc<Node>>, (Mark, String)> {
    let mut roots = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    // An anchor maps to its node once the node is complete; while it is being read it
    // maps to `None` (go-yaml registers an anchor when its node starts, so an alias
    // inside the node it names is a node that contains itself).
    let mut anchors: HashMap<String, Option<Rc<Node>>> = HashMap::new();
    let mut flow_depth = 0usize;
    for (event, mark) in events {
        let complete: Rc<Node> = match event {
            Event::DocumentStart => {
                anchors.clear();
                continue;
            }
            Event::DocumentEnd => continue,
            Event::Alias(name) => match anchors.get(&name) {
                Some(Some(target)) => Rc::new(Node::Alias {
                    target: target.clone(),
                    mark,
                }),
                Some(None) => {
                    return Err((
                        mark,
                        format!("the alias *{name} is inside the node its anchor names: kubectl refuses a value that contains itself"),
                    ))
                }
                None => {
                    return Err((
                        mark,
                        format!("the alias *{name} names no anchor defined before it in this document"),
                    ))
                }
            },
            Event::Scalar {
                anchor,
                tag,
                value,
                style,
                escaped_slash,
            } => {
                let node = Rc::new(Node::Scalar {
                    value,
                    style,
                    tag,
                    in_flow: flow_depth > 0,
                    escaped_slash,
                    mark,
                });
                if let Some(anchor) = anchor {
                    anchors.insert(anchor, Some(node.clone()));
                }
                node
            }
            Event::SequenceStart { anchor, tag, flow } => {
                if let Some(anchor) = &anchor {
                    anchors.insert(anchor.clone(), None);
                }
                flow_depth += usize::from(flow);
                stack.push(Open::Sequence {
                    items: Vec::new(),
                    tag,
                    anchor,
                    flow,
                    mark,
                });
                continue;
            }
            Event::MappingStart { anchor, tag, flow } => {
                if let Some(anchor) = &anchor {
                    anchors.insert(anchor.clone(), None);
                }
                flow_depth += usize::from(flow);
                stack.push(Open::Mapping {
                    pairs: Vec::new(),
                    key: None,
                    tag,
                    anchor,
                    flow,
                    mark,
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor, flow) = match stack.pop() {
                    Some(Open::Sequence {
                        items,
                        tag,
                        anchor,
                        flow,
                        mark,
                    }) => (Node::Sequence { items, tag, mark }, anchor, flow),
                    Some(Open::Mapping {
                        pairs,
                        tag,
                        anchor,
                        flow,
                        mark,
                        ..
                    }) => (Node::Mapping { pairs, tag, mark }, anchor, flow),
                    None => return Err((mark, "unbalanced collection end".into())),
                };
                flow_depth -= usize::from(flow);
                let node = Rc::new(node);
                if let Some(anchor) = anchor {
                    anchors.insert(anchor, Some(node.clone()));
                }
                node
            }
        };
        match stack.last_mut() {
            None => roots.push(complete),
            Some(Open::Sequence { items, .. }) => items.push(complete),
            Some(Open::Mapping { pairs, key, .. }) => match key.take() {
                None => *key = Some(complete),
                Some(k) => pairs.push((k, complete)),
            },
        }
    }
    Ok(roots)
}

// ----------------------------------------------------------------------------------------
// Nodes to JSON

const STR_TAG: &str = "tag:yaml.org,2002:str";

/// go-yaml v2's guard against alias bombs ("document contains excessive aliasing").
#[derive(Default)]
struct Converter {
    decodes: usize,
    aliased: usize,
    alias_depth: usize,
}

impl Converter {
    fn document(mut self, root: &Rc<Node>) -> Result<Option<Value>, String> {
        let value = self.value(root, "")?;
        Ok((!value.is_null()).then_some(value))
    }

    fn count(&mut self) -> Result<(), String> {
        self.decodes += 1;
        if self.alias_depth > 0 {
            self.aliased += 1;
        }
        let allowed = match self.decodes {
            0..=400_000 => 0.99,
            4_000_000.. => 0.10,
            n => 0.99 - 0.89 * ((n - 400_000) as f64 / 3_600_000.0),
        };
        if self.aliased > 100
            && self.decodes > 1000
            && self.aliased as f64 / self.decodes as f64 > allowed
        {
            return Err(
                "the document's aliases expand to too many values: kubectl refuses it (excessive aliasing)".into(),
            );
        }
        Ok(())
    }

    fn value(&mut self, node: &Rc<Node>, path: &str) -> Result<Value, String> {
        self.count()?;
        match &**node {
            Node::Alias { target, .. } => {
                self.alias_depth += 1;
                let value = self.value(target, path);
                self.alias_depth -= 1;
                value
            }
            Node::Scalar {
                escaped_slash: true,
                ..
            } => Err(format!(
                "{}: the escape \\/ in a double-quoted value: kubectl does not know it and refuses the manifest; write / alone",
                shown_path(path)
            )),
            Node::Scalar {
                value,
                style,
                tag,
                in_flow,
                ..
            } => scalar(value, *style, tag.as_deref(), *in_flow)
                .map_err(|message| format!("{}: {message}", shown_path(path))),
            Node::Sequence { items, tag, .. } => {
                refuse_tag(tag.as_deref(), path)?;
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.value(item, &format!("{path}[{i}]"))?);
                }
                Ok(Value::Array(out))
            }
            Node::Mapping { pairs, tag, .. } => {
                refuse_tag(tag.as_deref(), path)?;
                let mut out = Map::new();
                self.mapping(pairs, path, &mut out)?;
                Ok(Value::Object(out))
            }
        }
    }

    /// The pairs of one mapping into `out`, as go-yaml decodes them into a map, with the
    /// cases where readers disagree refused.
    fn mapping(
        &mut self,
        pairs: &[(Rc<Node>, Rc<Node>)],
        path: &str,
        out: &mut Map<String, Value>,
    ) -> Result<(), String> {
        let mut written: HashSet<String> = HashSet::new();
        let mut merged = false;
        for (key_node, value_node) in pairs {
            self.count()?;
            if is_merge_key(key_node) {
                let merge_path = join(path, "<<");
                if merged {
                    return Err(format!(
                        "{}: the merge key << appears twice in one mapping; merge a list instead (<<: [*a, *b])",
                        shown_path(&merge_path)
                    ));
                }
                merged = true;
                for (key, value) in self.merge_sources(value_node, &merge_path)? {
                    if written.contains(&key) {
                        return Err(format!(
                            "{}: set here and again by the merge key << that follows it: kubectl keeps the merged value, other YAML readers the one written here; put << first in the mapping",
                            shown_path(&join(path, &key))
                        ));
                    }
                    out.insert(key, value);
                }
                continue;
            }
            let key = self.key(key_node, path)?;
            let value_path = join(path, &key);
            if !written.insert(key.clone()) {
                return Err(format!(
                    "{}: the key appears twice in one mapping: kubectl keeps the last value without a word; remove one",
                    shown_path(&value_path)
                ));
            }
            let value = self.value(value_node, &value_path)?;
            out.insert(key, value);
        }
        Ok(())
    }

    /// What a merge key brings in: one mapping, or a list of them where the first ones
    /// take precedence.
    fn merge_sources(
        &mut self,
        value: &Rc<Node>,
        path: &str,
    ) -> Result<Map<String, Value>, String> {
        let sources: Vec<&Rc<Node>> = match &**value.resolved() {
            Node::Mapping { .. } => vec![value],
            Node::Sequence { items, tag, .. } if !matches!(&**value, Node::Alias { .. }) => {
                refuse_tag(tag.as_deref(), path)?;
                items.iter().collect()
            }
            _ => {
                return Err(format!(
                    "{}: a merge key takes a mapping or a list of mappings (kubectl refuses anything else)",
                    shown_path(path)
                ))
            }
        };
        let mut merged = Map::new();
        for source in sources.into_iter().rev() {
            let resolved = source.resolved();
            let Node::Mapping { pairs, tag, .. } = &**resolved else {
                return Err(format!(
                    "{}: a merge key takes a mapping or a list of mappings (kubectl refuses anything else)",
                    shown_path(path)
                ));
            };
            refuse_tag(tag.as_deref(), path)?;
            let aliased = matches!(&**source, Node::Alias { .. });
            self.alias_depth += usize::from(aliased);
            let mut map = Map::new();
            let result = self.mapping(pairs, path, &mut map);
            self.alias_depth -= usize::from(aliased);
            result?;
            for (k, v) in map {
                merged.insert(k, v);
            }
        }
        Ok(merged)
    }

    /// A mapping key: a string for kubectl and for YAML 1.2 alike.
    fn key(&mut self, node: &Rc<Node>, path: &str) -> Result<String, String> {
        let Node::Scalar {
            value,
            style,
            tag,
            in_flow,
            escaped_slash,
            ..
        } = &**node.resolved()
        else {
            return Err(format!(
                "{}: a mapping or a list used as a key: kubectl refuses it",
                shown_path(path)
            ));
        };
        if *escaped_slash {
            return Err(format!(
                "{}: the escape \\/ in the double-quoted key {value:?}: kubectl does not know it and refuses the manifest; write / alone",
                shown_path(path)
            ));
        }
        match scalar(value, *style, tag.as_deref(), *in_flow) {
            Ok(Value::String(key)) => Ok(key),
            Ok(other) => Err(format!(
                "{}: the key {value} is {} for kubectl, not a string{}; quote it (\"{value}\")",
                shown_path(path),
                describe(&other),
                match key_as_kubectl_writes_it(&other) {
                    Some(k) => format!(" (kubectl turns it into the key \"{k}\")"),
                    None => " (kubectl refuses it)".into(),
                },
            )),
            Err(message) => Err(format!("{}: key {value}: {message}", shown_path(path))),
        }
    }
}

fn is_merge_key(node: &Rc<Node>) -> bool {
    matches!(&**node, Node::Scalar { value, style: Style::Plain, tag: None, .. } if value == "<<")
}

fn refuse_tag(tag: Option<&str>, path: &str) -> Result<(), String> {
    match tag {
        None => Ok(()),
        Some(tag) => Err(format!(
            "{}: the tag {} is not supported: kubectl and YAML 1.2 readers do not agree on tagged values; remove it",
            shown_path(path),
            short_tag(tag)
        )),
    }
}

fn short_tag(tag: &str) -> String {
    match tag.strip_prefix("tag:yaml.org,2002:") {
        Some(rest) => format!("!!{rest}"),
        None => tag.to_string(),
    }
}

/// A scalar's value: quoted and block scalars are strings, `!!str` makes a string, other
/// tags are refused, and plain scalars are resolved (see [`resolve_plain`]).
fn scalar(value: &str, style: Style, tag: Option<&str>, in_flow: bool) -> Result<Value, String> {
    match tag {
        None => {}
        Some(STR_TAG) => return Ok(Value::String(value.to_string())),
        Some(tag) => {
            return Err(format!(
                "the tag {} is not supported: kubectl and YAML 1.2 readers do not agree on tagged values; remove it (quote the value for a string)",
                short_tag(tag)
            ))
        }
    }
    if style != Style::Plain {
        return Ok(Value::String(value.to_string()));
    }
    if in_flow && value.contains('?') {
        return Err(format!(
            "unquoted {value} inside [ ] or {{ }}: kubectl ends a plain value at ? there; quote it (\"{value}\")"
        ));
    }
    resolve_plain(value)
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// sigs.k8s.io/yaml's conversion of a non-string key.
fn key_as_kubectl_writes_it(value: &Value) -> Option<String> {
    match value {
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) if n.is_f64() => None,
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A path as messages show it: the document itself is `(document)`.
fn shown_path(path: &str) -> &str {
    if path.is_empty() {
        "(document)"
    } else {
        path
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

// ----------------------------------------------------------------------------------------
// Plain scalars

/// How go-yaml v2 (kubectl) resolves an untagged plain scalar.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KubectlReading {
    Null,
    Bool(bool),
    Int(i64),
    /// Beyond int64 (go-yaml's uint64).
    Uint(u64),
    Float(f64),
    Str,
}

/// How YAML 1.2's core schema resolves a plain scalar.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CoreReading {
    Null,
    Bool(bool),
    /// `None` beyond i128.
    Int(Option<i128>),
    Float(f64),
    Str,
}

/// go-yaml v2's `resolve` for an untagged plain scalar (go.yaml.in/yaml/v2
/// resolve.go), with Go's `strconv` rules.
pub fn kubectl_reading(s: &str) -> KubectlReading {
    use KubectlReading as K;
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return K::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return K::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return K::Bool(false)
        }
        ".nan" | ".NaN" | ".NAN" => return K::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return K::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return K::Float(f64::NEG_INFINITY),
        _ => {}
    }
    let first = s.as_bytes()[0];
    match first {
        b'.' => match go_decimal_float(s) {
            Some(f) => K::Float(f),
            None => K::Str,
        },
        b'0'..=b'9' | b'+' | b'-' => {
            let plain = s.replace('_', "");
            if let Some(i) = go_parse_int(&plain, 0) {
                return K::Int(i);
            }
            if let Some(u) = go_parse_uint(&plain, 0) {
                return K::Uint(u);
            }
            if let Some(f) = go_decimal_float(&plain) {
                return K::Float(f);
            }
            if let Some(rest) = plain.strip_prefix("0b") {
                if let Some(i) = go_parse_int(rest, 2) {
                    return K::Int(i);
                }
                if let Some(u) = go_parse_uint(rest, 2) {
                    return K::Uint(u);
                }
            } else if let Some(rest) = plain.strip_prefix("-0b") {
                if let Some(i) = go_parse_int(&format!("-{rest}"), 2) {
                    return K::Int(i);
                }
            }
            K::Str
        }
        _ => K::Str,
    }
}

/// go-yaml's `yamlStyleFloat` followed by `strconv.ParseFloat`: `None` when the text is
/// not of that form or the float overflows (Go then reports an error).
fn go_decimal_float(s: &str) -> Option<f64> {
    if !is_core_float_syntax(s) {
        return None;
    }
    let f: f64 = s.parse().ok()?;
    f.is_finite().then_some(f)
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`: go-yaml's float form, and
/// YAML 1.2's.
fn is_core_float_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && matches!(b[i], b'+' | b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && matches!(b[i], b'e' | b'E') {
        i += 1;
        if i < b.len() && matches!(b[i], b'+' | b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseUint(s, base, 64)` for base 0 (prefixes `0x`, `0o`, `0b`, a
/// leading `0` for octal) or a given base; underscores are already removed.
fn go_parse_uint(s: &str, base: u32) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let (digits, radix) = if base == 0 {
        let b = s.as_bytes();
        if b[0] == b'0' {
            match (b.len() >= 3).then(|| b[1].to_ascii_lowercase()) {
                Some(b'b') => (&s[2..], 2),
                Some(b'o') => (&s[2..], 8),
                Some(b'x') => (&s[2..], 16),
                _ => (&s[1..], 8),
            }
        } else {
            (s, 10)
        }
    } else {
        (s, base)
    };
    let mut n: u64 = 0;
    for c in digits.chars() {
        let d = c.to_digit(36)?;
        if d >= radix {
            return None;
        }
        n = n.checked_mul(u64::from(radix))?.checked_add(u64::from(d))?;
    }
    Some(n)
}

/// Go's `strconv.ParseInt(s, base, 64)`.
fn go_parse_int(s: &str, base: u32) -> Option<i64> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let magnitude = go_parse_uint(rest, base)?;
    if negative {
        if magnitude == 1 << 63 {
            Some(i64::MIN)
        } else {
            i64::try_from(magnitude).ok().map(|m| -m)
        }
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// YAML 1.2 core schema resolution (YAML 1.2.2, 10.3.2).
pub fn core_reading(s: &str) -> CoreReading {
    use CoreReading as C;
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return C::Null,
        "true" | "True" | "TRUE" => return C::Bool(true),
        "false" | "False" | "FALSE" => return C::Bool(false),
        ".nan" | ".NaN" | ".NAN" => return C::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return C::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return C::Float(f64::NEG_INFINITY),
        _ => {}
    }
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return C::Int(s.parse::<i128>().ok());
    }
    if let Some(octal) = s.strip_prefix("0o") {
        if !octal.is_empty() && octal.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return C::Int(i128::from_str_radix(octal, 8).ok());
        }
    }
    if let Some(hex) = s.strip_prefix("0x") {
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return C::Int(i128::from_str_radix(hex, 16).ok());
        }
    }
    if is_core_float_syntax(s) {
        if let Ok(f) = s.parse::<f64>() {
            return C::Float(f);
        }
    }
    C::Str
}

/// An untagged plain scalar as JSON: its reading when kubectl (YAML 1.1, go-yaml v2) and
/// YAML 1.2 agree and JSON can carry it, else why not (without the field, which the
/// caller adds).
pub fn resolve_plain(s: &str) -> Result<Value, String> {
    use CoreReading as C;
    use KubectlReading as K;
    let kubectl = kubectl_reading(s);
    let core = core_reading(s);
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    if let Some(n) = sexagesimal(s) {
        return Err(format!(
            "unquoted {s} is the base-60 number {} under YAML 1.1 rules (kubectl reads the text {}, tools that follow YAML 1.1 read the number); quote it ({})",
            go_float(n),
            quote(s),
            quote(s)
        ));
    }
    let yaml_1_1 = yaml_1_1_number(s);
    match (kubectl, core) {
        (K::Str, C::Str) => match yaml_1_1 {
            None => Ok(Value::String(s.to_string())),
            Some(n) => Err(format!(
                "unquoted {s} is the number {} for YAML 1.1 but the text {} for kubectl and YAML 1.2; quote it ({})",
                go_float(n),
                quote(s),
                quote(s)
            )),
        },
        (K::Null, C::Null) => Ok(Value::Null),
        (K::Bool(a), C::Bool(b)) if a == b => Ok(Value::Bool(a)),
        (K::Bool(b), _) => Err(format!(
            "unquoted {s} is the boolean {b} for kubectl and the operator; quote it ({}) or write {b}",
            quote(s)
        )),
        (K::Float(f), _) if !f.is_finite() => Err(format!(
            "unquoted {s} is the float {} for kubectl, which JSON cannot carry: kubectl and the apiserver refuse it; quote it ({}) for the text",
            if f.is_nan() { "NaN".to_string() } else if f > 0.0 { "+Inf".into() } else { "-Inf".into() },
            quote(s)
        )),
        (K::Uint(_) | K::Float(_), C::Int(_)) if !has_leading_zero(s) => Err(format!(
            "unquoted {s} is beyond the 64-bit integer range: kubectl and the apiserver keep it as the float {}, losing digits; quote it ({}) or write it as a float",
            go_float(kubectl_number(kubectl)),
            quote(s)
        )),
        (K::Int(_) | K::Uint(_) | K::Float(_), _) if has_leading_zero(s) => {
            let n = kubectl_number(kubectl);
            Err(format!(
                "unquoted {s} has a leading zero: it is the {}number {} for kubectl and the operator{}; quote it ({}) or write {}",
                if matches!(kubectl, K::Int(_)) && s.trim_start_matches(['+', '-']).len() > 1 { "octal " } else { "" },
                go_float(n),
                match core {
                    C::Int(Some(c)) if c as f64 != n => format!(" (YAML 1.2 reads {c})"),
                    _ => String::new(),
                },
                quote(s),
                go_float(n)
            ))
        }
        (K::Int(_) | K::Uint(_) | K::Float(_), C::Str) => {
            let n = go_float(kubectl_number(kubectl));
            Err(format!(
                "unquoted {s} is the number {n} for kubectl and the operator; quote it ({}) or write {n}",
                quote(s)
            ))
        }
        (K::Uint(_), _) => Err(format!(
            "unquoted {s} is beyond the 64-bit integer range: kubectl and the apiserver keep it as the float {}, losing digits; quote it ({}) or write it as a float",
            go_float(kubectl_number(kubectl)),
            quote(s)
        )),
        (K::Str, C::Int(_)) => Err(format!(
            "unquoted {s} is beyond the 64-bit integer range: kubectl reads it as the text {}; quote it ({})",
            quote(s),
            quote(s)
        )),
        (K::Str, C::Float(_)) => Err(format!(
            "unquoted {s} is beyond the range of a 64-bit float: kubectl reads it as the text {}; quote it ({})",
            quote(s),
            quote(s)
        )),
        (K::Int(a), C::Int(Some(b))) if i128::from(a) == b && yaml_1_1 == Some(a as f64) => {
            Ok(Value::from(a))
        }
        (K::Float(a), C::Float(b)) if a == b && yaml_1_1 == Some(a) => {
            Ok(number_as_the_apiserver_keeps_it(a))
        }
        (K::Int(_) | K::Float(_), C::Int(_) | C::Float(_)) => {
            let a = kubectl_number(kubectl);
            let write = match kubectl {
                K::Int(i) => i.to_string(),
                _ => format!(
                    "{} (a dot, and a sign in the exponent)",
                    serde_json::Number::from_f64(a).map_or_else(|| s.to_string(), |n| number(&n))
                ),
            };
            Err(format!(
                "unquoted {s} is the number {} for kubectl and YAML 1.2 but {} for YAML 1.1; write {write}, or quote it ({})",
                go_float(a),
                match yaml_1_1 {
                    Some(n) => format!("the number {}", go_float(n)),
                    None => format!("the text {}", quote(s)),
                },
                quote(s)
            ))
        }
        (kubectl, core) => Err(format!(
            "unquoted {s} reads as {kubectl:?} for kubectl but as {core:?} for YAML 1.2 readers; quote it ({})",
            quote(s)
        )),
    }
}

/// The number YAML 1.1's types read `s` as (yaml.org/type/int and /float: binary, octal,
/// decimal, hexadecimal and base-60 integers, floats with a dot and a signed exponent,
/// base-60 floats, infinities and NaN), if any.
pub fn yaml_1_1_number(s: &str) -> Option<f64> {
    if let Some(v) = sexagesimal(s) {
        return Some(v);
    }
    match s {
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    let (sign, body) = match s.as_bytes().first()? {
        b'-' => (-1.0, &s[1..]),
        b'+' => (1.0, &s[1..]),
        _ => (1.0, s),
    };
    let digits_in = |text: &str, radix: u32| -> Option<f64> {
        let digits = text.replace('_', "");
        let n = i128::from_str_radix(&digits, radix).ok()?;
        Some(sign * n as f64)
    };
    let all = |text: &str, ok: fn(u8) -> bool| !text.is_empty() && text.bytes().all(ok);
    if let Some(rest) = body.strip_prefix("0b") {
        return if all(rest, |b| matches!(b, b'0' | b'1' | b'_')) {
            digits_in(rest, 2)
        } else {
            None
        };
    }
    if let Some(rest) = body.strip_prefix("0x") {
        return if all(rest, |b| b.is_ascii_hexdigit() || b == b'_') {
            digits_in(rest, 16)
        } else {
            None
        };
    }
    if body.len() > 1 && body.starts_with('0') && all(body, |b| matches!(b, b'0'..=b'7' | b'_')) {
        return digits_in(body, 8);
    }
    if body == "0"
        || (body
            .as_bytes()
            .first()
            .is_some_and(|b| (b'1'..=b'9').contains(b))
            && all(body, |b| b.is_ascii_digit() || b == b'_'))
    {
        return digits_in(body, 10);
    }
    // `([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)?`, when it makes a number.
    let b = body.as_bytes();
    let mut i = 0;
    if b.first().is_some_and(u8::is_ascii_digit) {
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    if b.get(i) != Some(&b'.') {
        return None;
    }
    i += 1;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    if i < b.len() {
        if !matches!(b[i], b'e' | b'E') || !matches!(b.get(i + 1), Some(b'+' | b'-')) {
            return None;
        }
        i += 2;
        if i == b.len() || !b[i..].iter().all(u8::is_ascii_digit) {
            return None;
        }
    }
    let f: f64 = body.replace('_', "").parse().ok()?;
    Some(sign * f)
}

/// YAML 1.1's base-60 integers and floats (`1:20`, `-1:20:30.5`): numbers for readers
/// that follow YAML 1.1 (PyYAML, so Ansible's Kubernetes modules), strings for kubectl
/// (go-yaml v2 dropped them) and YAML 1.2. Their value, when `s` is one.
pub fn sexagesimal(s: &str) -> Option<f64> {
    let (negative, unsigned) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let mut parts = whole.split(':');
    let first = parts.next()?;
    // Integers: `[1-9][0-9_]*` first; floats: `[0-9][0-9_]*`.
    let first_ok = first
        .as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_digit() && (fraction.is_some() || *b != b'0'))
        && first.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if !first_ok || !whole.contains(':') {
        return None;
    }
    let mut value: f64 = first.replace('_', "").parse().ok()?;
    for part in parts {
        let ok = matches!(part.len(), 1 | 2)
            && part.bytes().all(|b| b.is_ascii_digit())
            && (part.len() == 1 || part.as_bytes()[0] <= b'5');
        if !ok {
            return None;
        }
        value = value * 60.0 + part.parse::<f64>().ok()?;
    }
    if let Some(fraction) = fraction {
        if !fraction.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
            return None;
        }
        let digits = fraction.replace('_', "");
        if !digits.is_empty() {
            value += format!("0.{digits}").parse::<f64>().ok()?;
        }
    }
    Some(if negative { -value } else { value })
}

/// `010`, `-00`, `08`, `01.5` is fine (a float in every reading).
fn has_leading_zero(s: &str) -> bool {
    let unsigned = s.trim_start_matches(['+', '-']);
    let b = unsigned.as_bytes();
    b.len() > 1 && b[0] == b'0' && b.iter().all(|c| c.is_ascii_digit() || *c == b'_')
}

fn kubectl_number(reading: KubectlReading) -> f64 {
    match reading {
        KubectlReading::Int(i) => i as f64,
        KubectlReading::Uint(u) => u as f64,
        KubectlReading::Float(f) => f,
        _ => f64::NAN,
    }
}

/// A float as Go's JSON encoder writes it (integral values without a fraction or
/// exponent below 1e21).
fn go_float(f: f64) -> String {
    if f == 0.0 || (f.abs() >= 1e-6 && f.abs() < 1e21) {
        format!("{f}")
    } else {
        format!("{f:e}")
    }
}

/// A float64 as the apiserver hands it on: Go's JSON encoder writes an integral float
/// below 1e21 as an integer literal (the shortest digits that round-trip, padded with
/// zeros, as Rust's `Display` writes them), which the apiserver keeps as an int64 when it
/// fits, and which the operator then reads as an integer when it fits 64 bits.
pub fn number_as_the_apiserver_keeps_it(f: f64) -> Value {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e21 {
        let text = format!("{f}");
        if let Ok(i) = text.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(u) = text.parse::<u64>() {
            return Value::from(u);
        }
    }
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

// ----------------------------------------------------------------------------------------
// Writing

/// Longest key written as a simple `key:`; YAML parsers refuse longer implicit keys.
const MAX_SIMPLE_KEY: usize = 1000;

/// A JSON value as one block-style YAML document that kubectl (YAML 1.1) and YAML 1.2
/// readers read as the same JSON: every string that some reader could take for something
/// else (`on`, `no`, `010`, `1_000`, `12:30`, a date...) is double-quoted, with
/// characters that YAML does not carry as they are escaped.
pub fn document(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(&mut out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_sequence(&mut out, items, 0, false),
        other => {
            out.push_str(&scalar_text(other));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Entries at `indent`; with `inline_first` the first one continues the current line
/// (after `- `).
fn write_mapping(out: &mut String, map: &Map<String, Value>, indent: usize, inline_first: bool) {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !inline_first {
            pad(out, indent);
        }
        let key = string(key);
        if key.len() > MAX_SIMPLE_KEY {
            out.push_str("? ");
            out.push_str(&key);
            out.push('\n');
            pad(out, indent);
        } else {
            out.push_str(&key);
        }
        out.push(':');
        write_value(out, value, indent + 2);
    }
}

/// What follows `key:`: a scalar on the same line, or a block on the next lines.
fn write_value(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_mapping(out, map, indent, false);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_sequence(out, items, indent, false);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

fn write_sequence(out: &mut String, items: &[Value], indent: usize, inline_first: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline_first {
            pad(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => write_mapping(out, map, indent + 2, true),
            Value::Array(inner) if !inner.is_empty() => {
                write_sequence(out, inner, indent + 2, true)
            }
            scalar => {
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

/// A scalar (or an empty collection) as YAML text.
pub fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => string(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// Integers as they are; floats in JSON's shortest form, with an exponent written
/// `1.0e+300` (YAML 1.1 needs the dot and the sign).
fn number(n: &serde_json::Number) -> String {
    let text = n.to_string();
    if !n.is_f64() {
        return text;
    }
    match text.split_once(['e', 'E']) {
        None => text,
        Some((mantissa, exponent)) => {
            let mantissa = if mantissa.contains('.') {
                mantissa.to_string()
            } else {
                format!("{mantissa}.0")
            };
            let exponent = if exponent.starts_with(['-', '+']) {
                exponent.to_string()
            } else {
                format!("+{exponent}")
            };
            format!("{mantissa}e{exponent}")
        }
    }
}

/// Plain when it can only be read as this string, double-quoted otherwise.
pub fn string(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_string()
    } else {
        double_quoted(s)
    }
}

/// A letter first, then letters, digits, `_`, `.`, `/` and `-`, and none of the words
/// YAML 1.1 reads as a boolean or null.
fn is_plain_safe(s: &str) -> bool {
    const WORDS: [&str; 9] = ["y", "n", "yes", "no", "true", "false", "on", "off", "null"];
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-'))
        && !WORDS.iter().any(|w| s.eq_ignore_ascii_case(w))
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_printable_as_is(c) => out.push(c),
            c if u32::from(c) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08X}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

/// YAML's printable set, without the byte-order mark and the characters YAML 1.1 counts
/// as line breaks (NEL, LS, PS), which a quoted scalar would fold: those are escaped.
fn is_printable_as_is(c: char) -> bool {
    matches!(u32::from(c),
        0x20..=0x7E | 0xA0..=0x2027 | 0x202A..=0xD7FF | 0xE000..=0xFEFE | 0xFF00..=0xFFFD | 0x10000..=0x10FFFF)
}

#[cfg(test)]
mod tests;
