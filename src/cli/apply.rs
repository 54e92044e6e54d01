//! `tollgate configs apply`: validate the file, plan against the fleet, print the plan,
//! then write it through the management API (creates, updates in place so counters
//! stay, deletes only with prune) and say exactly what was and was not applied.

use super::client::{Api, CallError};
use super::{EXIT_INVALID, EXIT_OK, EXIT_SERVER};
use crate::configs_file::format::{self, Desired};
use crate::configs_file::plan::{Action, Options, Step, count, plan};
use crate::configs_file::spec::{differing_fields, update_body};
use crate::model::ModelConfig;
use std::path::Path;

pub async fn apply(api: &Api, file: &Path, prune: bool, dry_run: bool) -> u8 {
    let desired = match format::read(file, chrono::Utc::now()) {
        Ok(d) => d,
        Err(errors) => {
            super::validate::print_errors(file, &errors);
            eprintln!("nothing applied");
            return EXIT_INVALID;
        }
    };
    let current = match api.list_all().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot list the model configs: {e}; nothing applied");
            return EXIT_SERVER;
        }
    };
    let refs: Vec<&ModelConfig> = current.iter().collect();
    let steps = plan(
        &desired,
        &refs,
        Options {
            prune,
            marker: None,
        },
    );
    for step in &steps {
        println!("{}", step.line());
    }
    let kept = if prune {
        0
    } else {
        current
            .len()
            .saturating_sub(steps.len() - count(&steps, Action::Create))
    };
    println!(
        "plan: {} to create, {} to update, {} to delete, {} unchanged{}",
        count(&steps, Action::Create),
        count(&steps, Action::Update),
        count(&steps, Action::Delete),
        count(&steps, Action::Unchanged),
        if kept > 0 {
            format!("; {kept} configs the file does not name are kept (--prune deletes them)")
        } else {
            String::new()
        }
    );
    if dry_run {
        println!("dry run: nothing applied");
        return EXIT_OK;
    }
    let changes: Vec<&Step> = steps
        .iter()
        .filter(|s| s.action != Action::Unchanged)
        .collect();
    let mut failed: Vec<String> = Vec::new();
    for step in &changes {
        match execute(api, step).await {
            Ok(()) => println!("applied   {}", step.line()),
            Err(e) => {
                eprintln!("FAILED    {}: {e}", step.line());
                failed.push(step.line());
            }
        }
    }
    if failed.is_empty() {
        println!("applied {} changes", changes.len());
        return EXIT_OK;
    }
    eprintln!(
        "partly applied: {} of {} changes applied; not applied:",
        changes.len() - failed.len(),
        changes.len()
    );
    for line in &failed {
        eprintln!("  {line}");
    }
    EXIT_SERVER
}

/// One change through the API. The answer must be what the file says: a server that
/// kept something the file changes (an older tollgate without a field) is a failure.
async fn execute(api: &Api, step: &Step<'_>) -> Result<(), String> {
    let made = match (step.action, step.desired, step.current) {
        (Action::Create, Some(d), _) => api.create(&d.body).await.map(Some),
        (Action::Update, Some(d), Some(c)) => {
            api.update(&c.id, &update_body(&d.config)).await.map(Some)
        }
        (Action::Delete, _, Some(c)) => api.delete(&c.id).await.map(|_| None),
        _ => Ok(None),
    }
    .map_err(|e: CallError| e.to_string())?;
    match (made, step.desired) {
        (Some(made), Some(d)) => check_made(&made, d),
        _ => Ok(()),
    }
}

fn check_made(made: &ModelConfig, desired: &Desired) -> Result<(), String> {
    let differ = differing_fields(made, &desired.config);
    if differ.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "written, but the server's config differs from the file in {} (an older tollgate?)",
            differ.join(", ")
        ))
    }
}
