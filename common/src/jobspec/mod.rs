//! Job specs: TOML text -> validated `Job`, reporting every problem at once with line,
//! column and field path; and the same semantic rules for jobs that arrive as JSON.
//!
//! The way through, for a TOML spec:
//!
//! ```text
//!   source ──toml::de::DeTable::parse──> spanned document ──┬──> SpanIndex (path -> key)
//!                                                            │
//!   reader::Table (typed reads; type errors, unknown keys) ──┘
//!        │ raw::RawJob (what the user wrote; Options for "not given")
//!        ▼
//!   build::job (defaults per job type, update inheritance)  -> model::Job
//!        ▼
//!   rules::check_job (semantic rules, shared with `validate`) -> problems
//!        ▼
//!   problems + SpanIndex -> SpecErrors (path, line, column, message), sorted by place
//! ```
//!
//! The raw stage is a hand-written walk over the spanned document rather than
//! `#[derive(Deserialize)]` because serde stops at the first type error; the walk keeps
//! going and reports every wrong type and every unknown key in one pass.

mod build;
mod error;
mod raw;
mod reader;
mod rules;
pub(crate) mod source;

#[cfg(test)]
mod tests;

use crate::model::{Job, JobType};

use error::dedup;
pub use error::{SpecError, SpecErrors};
pub use rules::{
    CONSTRAINT_OPERATORS, CONTAINER_CONFIG_KEYS, DRIVERS, MAX_CORES, MAX_COUNT, MAX_CPU_MHZ,
    MAX_DURATION, MAX_LOG_FILES, MAX_LOG_FILE_SIZE_MIB, MAX_MEMORY_MIB, MAX_PIDS,
    MAX_RESCHEDULE_ATTEMPTS, MOCK_CONFIG_KEYS, RAW_EXEC_CONFIG_KEYS, SIGNALS,
};

/// Parses and validates a TOML job spec.
pub fn parse(source: &str) -> Result<Job, SpecErrors> {
    let doc = toml::de::DeTable::parse(source).map_err(|e| malformed(source, &e))?;
    let index = source::SpanIndex::build(source, doc.get_ref());

    let problems = reader::Problems::default();
    let raw = raw::read_job(reader::Table::root(&problems, doc.get_ref()));
    let (read_problems, guessed) = problems.into_parts();
    let job = build::job(raw);

    // A field that could not be read was replaced by a default; rules about it (or about
    // anything inside it) would only repeat the first complaint in other words.
    let mut all = read_problems.clone();
    all.extend(rules::check_job(&job).into_iter().filter(|p| {
        !read_problems.iter().any(|r| is_within(&p.path, &r.path)) && !guessed.contains(&p.path)
    }));
    if all.is_empty() {
        Ok(job)
    } else {
        Err(index.locate_all(all))
    }
}

/// Validates a job that arrived as JSON (paths only, no lines). Paths use the TOML
/// names: `group.web.service[0].check[0].interval`, `constraint[1].operator`.
pub fn validate(job: &Job) -> Result<(), SpecErrors> {
    let problems = rules::check_job(job);
    if problems.is_empty() {
        return Ok(());
    }
    Err(SpecErrors(
        dedup(problems)
            .into_iter()
            .map(|p| SpecError {
                path: p.path,
                line: None,
                column: None,
                message: p.message,
            })
            .collect(),
    ))
}

/// Fills what a JSON job may leave out the way the TOML parser does: the name defaults
/// to the id; a service job's groups inherit the job's `update` when they have none, and
/// other job types' groups have none; groups and tasks are ordered by name.
pub fn canonicalize(job: &mut Job) {
    if job.name.is_empty() {
        job.name = job.id.to_string();
    }
    let is_service = job.job_type == JobType::Service;
    for group in &mut job.groups {
        if !is_service {
            group.update = None;
        } else if group.update.is_none() {
            group.update = job.update.clone();
        }
        group.tasks.sort_by(|a, b| a.name.cmp(&b.name));
    }
    job.groups.sort_by(|a, b| a.name.cmp(&b.name));
}

/// True when `path` is `outer` or lies inside it (`a.b` is within `a`; `a.bc` is not).
fn is_within(path: &str, outer: &str) -> bool {
    match path.strip_prefix(outer) {
        Some(rest) => rest.is_empty() || rest.starts_with('.') || rest.starts_with('['),
        None => false,
    }
}

fn malformed(source: &str, e: &toml::de::Error) -> SpecErrors {
    let (line, column) = match e.span() {
        Some(span) => {
            let (l, c) = source::line_column(source, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    SpecErrors(vec![SpecError {
        path: String::new(),
        line,
        column,
        message: format!("invalid TOML: {}", e.message().trim()),
    }])
}
