//! `outbox move-aside`: set a damaged outbox file aside so the service starts over.

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum OutboxCommand {
    /// Rename a damaged (or unwanted) outbox to outbox.redb.aside-<time>, so the service starts
    /// over with an empty one; says what is lost. Stop the service first.
    MoveAside {
        #[command(flatten)]
        storage: crate::config::DataDirArgs,
    },
}

pub(super) fn move_aside(data_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let moved = crate::outbox::move_aside(data_dir)?;
    if moved.database.as_os_str().is_empty() {
        println!("the outbox file was already gone; its marker is moved aside");
    } else {
        println!(
            "moved the outbox to {} (kept for inspection)",
            moved.database.display()
        );
    }
    match (moved.events, moved.dead_letters) {
        (Some(events), Some(dead)) => println!(
            "lost with it: {events} events not yet delivered everywhere and {dead} dead letters"
        ),
        _ => println!("lost with it: whatever it held (it could not be read to count)"),
    }
    println!(
        "events a source has not acknowledged yet are read again; the next start creates an empty outbox in {}",
        data_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
