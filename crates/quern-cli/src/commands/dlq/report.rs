//! What a replay or purge run did: per-message lines, the summary (text or JSON), the audit line, the exit status.

use std::collections::BTreeMap;
use std::process::ExitCode;

use quern_queue::dead_letters::{Released, Renewal, RETAIN_BYTES, SCAN_CAP};
use serde_json::{json, Value};

use super::view::{now_ms, rfc3339, LetterView};
use crate::output::{self, outln};

/// Exit status when some messages were refused by the replay cap.
pub const SOME_REFUSED: u8 = 5;
/// Exit status of a refused invocation (as clap uses for usage errors).
pub const USAGE: u8 = 2;

/// What happened to one selected message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Would,
    Refused,
    Failed,
}

#[derive(Debug)]
struct Line {
    seq: usize,
    id: String,
    reason: String,
    outcome: Outcome,
    detail: Option<String>,
}

/// Counts of one run; `done` is what the verb did (replayed or purged).
#[derive(Debug)]
pub struct Summary {
    verb: &'static str,
    dry_run: bool,
    options: String,
    pub read: usize,
    pub selected: usize,
    pub done: usize,
    pub would: usize,
    pub refused: usize,
    pub skipped: usize,
    pub unexamined: usize,
    pub failed: usize,
    pub left_unread: usize,
    by_reason: BTreeMap<String, usize>,
    lines: Vec<Line>,
    first_error: Option<String>,
}

impl Summary {
    /// An empty summary; `options` describes the flags for the audit line.
    pub fn new(verb: &'static str, dry_run: bool, options: String) -> Summary {
        Summary {
            verb,
            dry_run,
            options,
            read: 0,
            selected: 0,
            done: 0,
            would: 0,
            refused: 0,
            skipped: 0,
            unexamined: 0,
            failed: 0,
            left_unread: 0,
            by_reason: BTreeMap::new(),
            lines: Vec::new(),
            first_error: None,
        }
    }

    /// Counts a message the filters selected; returns its rank among the selected, for [`Summary::record`].
    pub fn select(&mut self, view: &LetterView) -> usize {
        self.selected += 1;
        *self.by_reason.entry(view.reason_key().to_owned()).or_default() += 1;
        self.selected - 1
    }

    /// Records what happened to the selected message of rank `seq` (outcomes of replays arrive with their
    /// confirms, out of order; lines are printed in reading order).
    pub fn record(&mut self, seq: usize, view: &LetterView, outcome: Outcome, detail: Option<String>) {
        match outcome {
            Outcome::Done => self.done += 1,
            Outcome::Would => self.would += 1,
            Outcome::Refused => self.refused += 1,
            Outcome::Failed => {
                self.failed += 1;
                if self.first_error.is_none() {
                    self.first_error = detail.clone();
                }
            }
        }
        self.lines.push(Line { seq, id: view.id().to_owned(), reason: view.reason_key().to_owned(), outcome, detail });
    }

    /// Writes the audit line of this run by `user` at `at`: a `quern::audit` event for the logs, and the same on
    /// stderr for whoever ran it.
    pub fn audit(&self, user: &str, at: &str) {
        tracing::info!(
            target: "quern::audit",
            user = %user,
            at = %at,
            action = self.verb,
            dry_run = self.dry_run,
            options = %self.options,
            read = self.read,
            selected = self.selected,
            done = self.done,
            refused = self.refused,
            skipped = self.skipped,
            failed = self.failed,
            "dead-letter {}",
            self.verb
        );
        eprintln!(
            "audit: user={user} at={at} action={} dry_run={} options=\"{}\" {}",
            self.verb,
            self.dry_run,
            self.options,
            self.audit_counts()
        );
    }

    /// What happened to each selected message, in reading order: its id, its reason, the outcome's name
    /// (`replayed`, `would_purge`, `refused`, …) and any detail.
    pub fn lines(&mut self) -> Vec<(String, String, String, Option<String>)> {
        self.lines.sort_by_key(|line| line.seq);
        self.lines
            .iter()
            .map(|l| (l.id.clone(), l.reason.clone(), self.outcome_name(l.outcome), l.detail.clone()))
            .collect()
    }

    /// The first failure of a message, if any.
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// The verb: `replay` or `purge`.
    pub fn verb(&self) -> &'static str {
        self.verb
    }

    fn outcome_name(&self, outcome: Outcome) -> String {
        match outcome {
            Outcome::Done if self.verb.ends_with('e') => format!("{}d", self.verb),
            Outcome::Done => format!("{}ed", self.verb),
            Outcome::Would => format!("would_{}", self.verb),
            Outcome::Refused => "refused".to_owned(),
            Outcome::Failed => "failed".to_owned(),
        }
    }

    fn to_json(&self, user: &str, at: &str, error: Option<&str>) -> Value {
        let messages: Vec<Value> = self
            .lines
            .iter()
            .map(|l| json!({"id": l.id, "reason": l.reason, "outcome": self.outcome_name(l.outcome), "detail": l.detail}))
            .collect();
        let mut value = json!({
            "action": self.verb,
            "dry_run": self.dry_run,
            "options": self.options,
            "user": user,
            "at": at,
            "read": self.read,
            "selected": self.selected,
            "refused": self.refused,
            "skipped": self.skipped,
            "unexamined": self.unexamined,
            "failed": self.failed,
            "left_unread": self.left_unread,
            "by_reason": self.by_reason,
            "messages": messages,
            "error": error,
        });
        value[self.outcome_name(Outcome::Done)] = json!(self.done);
        value[self.outcome_name(Outcome::Would)] = json!(self.would);
        value
    }

    fn counts(&self) -> String {
        let verb = self.outcome_name(Outcome::Done);
        let acted =
            if self.dry_run { format!("would {} {}", self.verb, self.would) } else { format!("{verb} {}", self.done) };
        format!(
            "read {}, selected {}, {acted}, refused {}, skipped {}, failed {}, not examined {}",
            self.read, self.selected, self.refused, self.skipped, self.failed, self.unexamined
        )
    }

    fn audit_counts(&self) -> String {
        format!(
            "read={} selected={} {}={} {}={} refused={} skipped={} failed={} unexamined={}",
            self.read,
            self.selected,
            self.outcome_name(Outcome::Done),
            self.done,
            self.outcome_name(Outcome::Would),
            self.would,
            self.refused,
            self.skipped,
            self.failed,
            self.unexamined
        )
    }
}

/// Tells the operator, on stderr, when the messages kept were renewed or should have been and were not.
pub fn note_release(released: &Released) {
    let (kept, highest) = (released.kept, released.highest_delivery_count);
    match &released.renewal {
        Renewal::NotDue => {}
        Renewal::Done => eprintln!(
            "quern: renewed {kept} dead letters (RabbitMQ had given some out {highest} times): fresh copies in the \
             same order restart the count a delivery limit is checked against (docs/brokers.md)"
        ),
        Renewal::TooLarge => eprintln!(
            "quern: warning: {kept} dead letters, given out up to {highest} times, are over {} MiB together, too large \
             to renew in one run; a broker with a delivery limit (RabbitMQ 4: 20 by default) drops a message given \
             out more often: replay or purge some of them, or see docs/brokers.md",
            RETAIN_BYTES / (1024 * 1024)
        ),
        Renewal::Failed { renewed, error } => eprintln!(
            "quern: warning: renewing dead letters stopped after {renewed} of {kept}: {error}; the others were \
             returned as they were, none was lost"
        ),
    }
}

/// The per-message lines and the summary, on stdout.
fn print_summary(summary: &Summary, user: &str, at: &str, error: Option<&str>, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return outln!("{}", summary.to_json(user, at, error));
    }
    for line in &summary.lines {
        let detail = line.detail.as_deref().map(|d| format!("\t{d}")).unwrap_or_default();
        outln!("{}\t{}\t{}{detail}", summary.outcome_name(line.outcome), line.id, line.reason)?;
    }
    let dry = if summary.dry_run { " (dry run: nothing changed)" } else { "" };
    outln!("{}{dry}: {}", summary.verb, summary.counts())?;
    if !summary.by_reason.is_empty() {
        let reasons: Vec<String> = summary.by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
        outln!("by reason: {}", reasons.join(", "))?;
    }
    Ok(())
}

/// Prints everything about the run and turns it into an exit status; an aborting `result` error is returned
/// after the summary and the audit line, so even a broken run leaves a record.
pub fn finish(mut summary: Summary, result: anyhow::Result<()>, as_json: bool) -> anyhow::Result<ExitCode> {
    summary.lines.sort_by_key(|line| line.seq);
    let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "unknown".to_owned());
    let at = rfc3339(now_ms()).unwrap_or_default();
    let error = match &result {
        Err(e) => Some(format!("{e:#}")),
        Ok(()) => summary.first_error.clone(),
    };
    // A closed stdout (`| head`) stops the printing only: the audit line and the exit status below still matter.
    let printed = print_summary(&summary, &user, &at, error.as_deref(), as_json);
    if summary.left_unread > 0 {
        eprintln!(
            "quern: stopped after reading {SCAN_CAP} messages; {} more were not read (run again to reach them)",
            summary.left_unread
        );
    }
    summary.audit(&user, &at);
    output::closed_is_fine(printed)?;
    result?;
    if let Some(error) = error {
        eprintln!("quern: {error} (the message stays in the dead-letter queue)");
        return Ok(ExitCode::FAILURE);
    }
    if summary.refused > 0 {
        return Ok(ExitCode::from(SOME_REFUSED));
    }
    Ok(ExitCode::SUCCESS)
}
