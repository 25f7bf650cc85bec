//! `shadowsync manifest parse`: print the resources exactly as `apply` and `diff` read
//! them, without a data plane. It shows what a manifest means (the same as for kubectl
//! and the operator, or an error naming the field), and lets a test compare that reading
//! with the apiserver's.

use std::path::PathBuf;

use serde_json::Value;

use super::manifest::{self, Resource};
use crate::api::validate::{
    format_errors, validate_retained_message, validate_thing_shadow, validate_thing_shadow_set,
};
use crate::dataplane::ShadowLimits;

/// Output format of `manifest parse`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON list of the resources.
    Json,
    /// The resources as YAML documents.
    Yaml,
}

/// `shadowsync manifest parse` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ParseArgs {
    /// Manifest files or folders (`-` reads standard input). Repeatable.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Also read the sub-folders of folders given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Json)]
    pub output: Format,
}

/// Prints every resource as read (defaults filled in), in input order. Exit 2 when a
/// manifest cannot be read (nothing is printed, as `apply` writes nothing), 1 when a spec
/// breaks a rule `apply` checks before any call (printed, with the error on stderr), 0
/// otherwise.
pub fn parse(args: ParseArgs) -> u8 {
    let loaded = manifest::load(&args.files, args.recursive);
    for note in &loaded.skipped {
        eprintln!("note: {note}");
    }
    if !loaded.errors.is_empty() {
        for err in &loaded.errors {
            eprintln!("error: {err}");
        }
        return 2;
    }
    let limits = ShadowLimits::default();
    let mut refused = 0;
    let mut objects = Vec::new();
    let mut sets = loaded.sets.iter().peekable();
    for (index, m) in loaded.manifests.iter().map(Some).chain([None]).enumerate() {
        // Sets in their place in the input, as read (not expanded: that needs the
        // registry).
        while let Some(set) = sets.next_if(|s| s.position <= index) {
            let name = set.set.metadata.name.as_deref().unwrap_or_default();
            if let Err(errors) = validate_thing_shadow_set(name, &set.set.spec, &limits) {
                refused += 1;
                eprintln!(
                    "error: {}: ThingShadowSet {}: InvalidSpec: {}",
                    set.source,
                    set.key(),
                    format_errors(&errors)
                );
            }
            objects.push(serde_json::to_value(&set.set).unwrap_or(Value::Null));
        }
        let Some(m) = m else { break };
        let (object, verdict) = match &m.resource {
            Resource::ThingShadow(r) => (
                serde_json::to_value(r),
                validate_thing_shadow(&r.spec, &limits),
            ),
            Resource::RetainedMessage(r) => (
                serde_json::to_value(r),
                validate_retained_message(&r.spec, &limits),
            ),
        };
        if let Err(errors) = verdict {
            refused += 1;
            eprintln!(
                "error: {}: {} {}: InvalidSpec: {}",
                m.source,
                m.resource.kind(),
                m.resource.key(),
                format_errors(&errors)
            );
        }
        objects.push(object.unwrap_or(Value::Null));
    }
    match args.output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(objects)).unwrap_or_default()
        ),
        Format::Yaml => {
            for object in &objects {
                println!("---");
                print!("{}", super::yaml::document(object));
            }
        }
    }
    u8::from(refused > 0)
}
