//! `pollcast init`: write a commented config.toml from the API's own
//! OpenAPI 3.0/3.1 or Swagger 2.0 document (a file or an http:// URL, JSON
//! or YAML), or from live GET responses (`--probe`).
//!
//! This module owns the command: reading the source, planning feeds
//! ([`openapi`], [`probe`], the shared rules in [`detect`]), rendering
//! ([`render`]) and writing the file. It must never overwrite a file unless
//! told to, never send anything but GET to an API, and never write a config
//! that `pollcast --check` would refuse. It sits beside start-up: nothing in
//! the library imports it.

mod auth;
mod detect;
mod doc;
mod fetch;
mod openapi;
mod probe;
mod render;
mod schema;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use fetch::FetchError;

/// `pollcast init`'s arguments.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["openapi", "probe"])))]
pub struct InitArgs {
    /// OpenAPI 3.0/3.1 or Swagger 2.0 document, JSON or YAML: a file or an
    /// http:// URL (e.g. http://127.0.0.1:8000/openapi.json).
    #[arg(long, value_name = "FILE|URL")]
    pub openapi: Option<String>,
    /// Probe a running API instead: GET each PATH once under URL (nothing
    /// but GET is ever sent) and infer lists and ids from the answers.
    #[arg(long, value_name = "URL", requires = "paths")]
    pub probe: Option<String>,
    /// With --probe: the list paths to GET, e.g. /api/jobs /api/users.
    #[arg(value_name = "PATH", conflicts_with = "openapi")]
    pub paths: Vec<String>,
    /// The API's address for [upstream] url [default: the document's
    /// server, else where the document or the probe was fetched].
    // Help text, where `[upstream]` is the config section, not a doc link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Where to write the config ("-" for standard output).
    #[arg(long, value_name = "PATH", default_value = "config.toml")]
    pub out: PathBuf,
    /// Overwrite --out if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Why `init` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{place}:{line}:{column}: {why}")]
    Syntax {
        place: String,
        line: usize,
        column: usize,
        why: String,
    },
    #[error("{place}: {pointer}: {why}")]
    At {
        place: String,
        pointer: String,
        why: String,
    },
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}: no list endpoint found{1}")]
    NoFeeds(String, String),
    #[error("{0} exists; pass --force to overwrite it")]
    Exists(PathBuf),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("the generated config does not pass --check (a bug in pollcast init): {0}")]
    Invalid(String),
}

/// What `init` decided, before it becomes text.
pub(crate) struct Plan {
    /// What was read, for the header comment.
    pub source: String,
    pub upstream: String,
    /// Set when the upstream URL is a placeholder or a guess (a `TODO:`).
    pub upstream_note: Option<String>,
    pub feeds: Vec<FeedPlan>,
    /// GET operations that are not feeds, each with why.
    pub skipped: Vec<String>,
}

pub(crate) struct FeedPlan {
    pub name: String,
    pub poll: String,
    pub sse: String,
    /// The operation it comes from (`GET /api/jobs (operationId ...): summary`).
    pub from: String,
    pub items: String,
    pub items_why: String,
    pub id: detect::IdPick,
    /// The item schema's name, for the id comment.
    pub item_name: Option<String>,
    /// Declared query parameters; `None`: unknown (any accepted).
    pub query: Option<Vec<String>>,
    pub token_param: Option<String>,
    pub auth_notes: Vec<String>,
    /// Write operations at or under the poll path (`PATCH /api/jobs/{id}`).
    pub writes: Vec<String>,
    pub notes: Vec<String>,
}

/// Used when nothing names the API's address.
const PLACEHOLDER: &str = "http://127.0.0.1:8000";

/// `[upstream] url`, a note when it is not certain, and the base path to put
/// in front of every poll path. `origin`/`base` are where the document (or
/// probe URL) says the API is; `doc_url` where the document came from.
pub(crate) fn choose_upstream(
    flag: Option<&str>,
    origin: Option<&str>,
    base: &str,
    doc_url: Option<&str>,
) -> (String, Option<String>, String) {
    if let Some(url) = flag {
        let own_path = url
            .split_once("://")
            .and_then(|(_, r)| r.find('/').map(|i| &r[i..]))
            .unwrap_or("")
            .trim_end_matches('/');
        let base = if !base.is_empty() && own_path.ends_with(base) {
            ""
        } else {
            base
        };
        return (url.trim_end_matches('/').to_owned(), None, base.to_owned());
    }
    match origin {
        Some(o) if o.starts_with("http://") => (o.to_owned(), None, base.to_owned()),
        Some(o) => (
            PLACEHOLDER.to_owned(),
            Some(format!(
                "TODO: the document's server is {o}{base}; pollcast speaks plain http to the API beside it: set its local address (or run init with --upstream)."
            )),
            base.to_owned(),
        ),
        None => match doc_url.and_then(|u| u.strip_prefix("http://")) {
            Some(rest) => {
                let host = &rest[..rest.find('/').unwrap_or(rest.len())];
                (format!("http://{host}"), None, base.to_owned())
            }
            None => (
                PLACEHOLDER.to_owned(),
                Some("TODO: the document names no http server: set the API's address (or run init with --upstream).".into()),
                base.to_owned(),
            ),
        },
    }
}

/// Run `pollcast init`; returns the summary to print.
pub async fn run(args: &InitArgs) -> Result<String, InitError> {
    if let Some(u) = &args.upstream {
        crate::config::UpstreamUrl::parse(u)
            .map_err(|e| InitError::Usage(format!("--upstream: {e}")))?;
    }
    let to_stdout = args.out.as_os_str() == "-";
    // Refuse before any work, so nothing is fetched for nothing.
    if !to_stdout && !args.force && args.out.exists() {
        return Err(InitError::Exists(args.out.clone()));
    }
    let plan = match (&args.openapi, &args.probe) {
        (Some(src), _) => {
            let (text, url) = read_document(src).await?;
            let value = doc::parse(&text, src)?;
            openapi::plan(&value, src, url.as_deref(), args.upstream.as_deref())?
        }
        (None, Some(url)) => probe::plan(url, &args.paths, args.upstream.as_deref()).await?,
        (None, None) => return Err(InitError::Usage("give --openapi or --probe".into())),
    };
    if plan.feeds.is_empty() {
        let why = if plan.skipped.is_empty() {
            String::new()
        } else {
            format!(":\n  {}", plan.skipped.join("\n  "))
        };
        return Err(InitError::NoFeeds(plan.source, why));
    }
    let out_name = if to_stdout {
        "config.toml".to_owned()
    } else {
        args.out.display().to_string()
    };
    let text = render::render(&plan, &out_name);
    verify(&text)?;
    if to_stdout {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| InitError::Write(args.out.clone(), e))?;
    } else {
        write(&args.out, &text, args.force)?;
    }
    let todos = text.lines().filter(|l| l.starts_with("# TODO")).count();
    let names: Vec<&str> = plan.feeds.iter().map(|f| f.name.as_str()).collect();
    let mut summary = format!(
        "wrote {}: {} feed{} ({}) from {}",
        if to_stdout {
            "the config to standard output"
        } else {
            &out_name
        },
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", "),
        plan.source
    );
    if todos > 0 {
        summary.push_str(&format!("\n{todos} TODO comment(s) ask for a decision"));
    }
    if !to_stdout {
        summary.push_str(&format!(
            "\nnext: pollcast --check --config {out_name} && pollcast --config {out_name}"
        ));
    }
    Ok(summary)
}

/// The document's text, and its URL when it was fetched.
async fn read_document(src: &str) -> Result<(String, Option<String>), InitError> {
    if src.contains("://") {
        let got = fetch::get(src).await?;
        if !got.status.is_success() {
            return Err(InitError::Fetch(FetchError::Http(
                src.to_owned(),
                format!("answered {}", got.status),
            )));
        }
        let text = String::from_utf8(got.body.to_vec()).map_err(|_| InitError::Syntax {
            place: src.to_owned(),
            line: 1,
            column: 1,
            why: "not UTF-8 text".into(),
        })?;
        return Ok((text, Some(src.to_owned())));
    }
    let text = std::fs::read_to_string(src).map_err(|e| InitError::Read(src.to_owned(), e))?;
    Ok((text, None))
}

/// The text must parse and validate exactly as `pollcast --check` would
/// (environment overrides aside).
fn verify(text: &str) -> Result<(), InitError> {
    let config: crate::config::Config =
        toml::from_str(text).map_err(|e| InitError::Invalid(e.to_string()))?;
    config
        .validate()
        .map_err(|p| InitError::Invalid(format!("{}: {}", p.key_path(), p.message)))
}

fn write(path: &Path, text: &str, force: bool) -> Result<(), InitError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        // create_new: a file that appeared since the first check is not overwritten either.
        options.create_new(true);
    }
    let mut f = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            InitError::Exists(path.to_owned())
        } else {
            InitError::Write(path.to_owned(), e)
        }
    })?;
    f.write_all(text.as_bytes())
        .map_err(|e| InitError::Write(path.to_owned(), e))
}
