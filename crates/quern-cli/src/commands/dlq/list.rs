//! `quern dlq list`: every dead letter (up to the scan cap) as a table or a JSON array; nothing is removed and
//! every message goes back to its place.

use std::process::ExitCode;

use quern_queue::dead_letters::{DeadLetter, DeadLetterScan, SCAN_CAP};
use serde_json::Value;

use super::args::ListArgs;
use super::report::note_release;
use super::view::{now_ms, short_age, truncate, LetterView};
use crate::output::outln;

pub async fn run(args: ListArgs) -> anyhow::Result<ExitCode> {
    let connection = super::connect(&args.broker).await?;
    let now = now_ms();
    let mut views = Vec::new();
    let (read, left_unread) = read_all(&connection, &args.broker.topology, |letter| {
        let view = LetterView::new(letter, now);
        if args.filters.matches(&view) {
            views.push(view);
        }
    })
    .await?;
    let _ = connection.close(200, "list done".into()).await;
    if args.json {
        outln!("{}", Value::Array(views.iter().map(LetterView::to_json).collect()))?;
    } else {
        print_table(&views)?;
        eprintln!("{} of {read} dead letters shown", views.len());
    }
    if left_unread > 0 {
        eprintln!("quern: only the first {SCAN_CAP} messages were read; {left_unread} more are in the queue");
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the whole dead-letter queue (up to [`SCAN_CAP`]), calling `visit` for each message, and keeps every
/// message in its order (returned, or renewed once the broker's delivery count gets high: see
/// `quern_queue::dead_letters`). Returns how many were read and how many were left unread.
pub async fn read_all(
    connection: &quern_queue::lapin::Connection,
    topology: &quern_core::Topology,
    mut visit: impl FnMut(&DeadLetter),
) -> anyhow::Result<(usize, usize)> {
    let mut scan = DeadLetterScan::open(connection, topology).await?;
    let walked: anyhow::Result<()> = async {
        while let Some(letter) = scan.next().await? {
            visit(&letter);
        }
        Ok(())
    }
    .await;
    let counts = (scan.read(), scan.left_unread());
    let released = scan.release(connection).await;
    walked?;
    note_release(&released?);
    Ok(counts)
}

fn print_table(views: &[LetterView]) -> anyhow::Result<()> {
    let header = ["ID", "REASON", "CLASS", "ATTEMPTS", "AGE", "COLLECTION", "DOCUMENT", "ERROR"];
    let rows: Vec<[String; 8]> = views
        .iter()
        .map(|v| {
            let or_dash =
                |s: &Option<String>, max: usize| s.as_deref().map(|s| truncate(s, max)).unwrap_or_else(|| "-".into());
            [
                v.id().to_owned(),
                or_dash(&v.reason, 24),
                or_dash(&v.reason_class, 10),
                v.attempts.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
                v.age_ms.map(short_age).unwrap_or_else(|| "-".into()),
                or_dash(&v.collection, 24),
                or_dash(&v.document_id, 32),
                or_dash(&v.error, 60),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        outln!("{}", padded.join("  ").trim_end())
    };
    line(header.to_vec())?;
    for row in &rows {
        line(row.iter().map(String::as_str).collect())?;
    }
    Ok(())
}
