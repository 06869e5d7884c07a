//! `orch system gc`: a garbage collection now (`PUT /v1/system/gc`), with every
//! threshold zero; prints what it deleted.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use orch_common::api::GcResponse;

use crate::output::{self, Table};
use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Collect terminal allocations and evaluations, dead jobs and down nodes now,
    /// whatever their age (the periodic collector waits for the configured
    /// thresholds). Running work is never touched.
    #[command(after_help = GC_EXAMPLES)]
    Gc,
}

const GC_EXAMPLES: &str = "EXAMPLES:
  orch system gc
  orch system gc --json
  ORCH_ADDR=http://10.0.0.5:4747 orch system gc";

pub async fn run(ctx: &Ctx, cmd: SystemCommand) -> Result<ExitCode> {
    match cmd {
        SystemCommand::Gc => gc(ctx).await,
    }
}

async fn gc(ctx: &Ctx) -> Result<ExitCode> {
    let api = ctx.api()?;
    let counts: GcResponse = api.put("/v1/system/gc", &serde_json::json!({})).await?;
    if ctx.json {
        output::print_json(&counts)?;
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&counts));
    Ok(ExitCode::SUCCESS)
}

fn render(c: &GcResponse) -> String {
    let mut t = Table::new(&["JOBS", "EVALS", "ALLOCS", "NODES", "LOG ENTRIES"]);
    t.row(vec![
        c.jobs.to_string(),
        c.evals.to_string(),
        c.allocs.to_string(),
        c.nodes.to_string(),
        c.log_entries.to_string(),
    ]);
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counts_print_as_one_table_line() {
        let text = render(&GcResponse {
            jobs: 1,
            evals: 3,
            allocs: 12,
            nodes: 0,
            log_entries: 40,
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("JOBS"), "{text}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells, ["1", "3", "12", "0", "40"]);
    }
}
