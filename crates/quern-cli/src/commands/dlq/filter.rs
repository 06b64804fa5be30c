//! Which dead letters a command acts on: the filter flags, their matching, and durations such as `30s` or `1h30m`.

use std::time::Duration;

use clap::Args;
use quern_config::parse_duration;

use super::view::LetterView;

/// Filters shared by `list`, `replay` and `purge`; all given ones must match.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Every message (replay and purge need this or another filter).
    #[arg(long, conflicts_with_all = ["ids", "reason", "collection", "older_than", "newer_than"])]
    pub all: bool,
    /// A message id or job id (repeat for several).
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<String>,
    /// The `quern-reason` header, e.g. `contract` or `embedding_rejected`.
    #[arg(long)]
    pub reason: Option<String>,
    /// The `collection` in the body.
    #[arg(long)]
    pub collection: Option<String>,
    /// Dead for at least this long (`30s`, `10m`, `1h30m`, `1d`), by the dead-at header or else the last failure.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub older_than: Option<Duration>,
    /// Dead for less than this long (`30s`, `10m`, `1h30m`, `1d`).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub newer_than: Option<Duration>,
}

/// The flags that choose messages, named in the refusal when none is given.
pub const FILTER_FLAGS: &str = "--all, --id, --reason, --collection, --older-than or --newer-than";

impl FilterArgs {
    /// Whether the operator chose anything (`--all` counts): acting commands refuse otherwise.
    pub fn chosen(&self) -> bool {
        self.all
            || !self.ids.is_empty()
            || self.reason.is_some()
            || self.collection.is_some()
            || self.older_than.is_some()
            || self.newer_than.is_some()
    }

    /// Whether `letter` passes every given filter. A message without a death time matches no age filter.
    pub fn matches(&self, letter: &LetterView) -> bool {
        let id_ok = self.ids.is_empty()
            || self
                .ids
                .iter()
                .any(|id| Some(id.as_str()) == letter.message_id.as_deref() || Some(id) == letter.job_id.as_ref());
        let reason_ok = self.reason.as_ref().is_none_or(|r| letter.reason.as_ref() == Some(r));
        let collection_ok = self.collection.as_ref().is_none_or(|c| letter.collection.as_ref() == Some(c));
        let age = letter.age();
        let older_ok = self.older_than.is_none_or(|d| age.is_some_and(|a| a >= d));
        let newer_ok = self.newer_than.is_none_or(|d| age.is_some_and(|a| a < d));
        id_ok && reason_ok && collection_ok && older_ok && newer_ok
    }

    /// The filters as flags, for the audit line.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.all {
            parts.push("--all".to_owned());
        }
        parts.extend(self.ids.iter().map(|id| format!("--id {id}")));
        if let Some(reason) = &self.reason {
            parts.push(format!("--reason {reason}"));
        }
        if let Some(collection) = &self.collection {
            parts.push(format!("--collection {collection}"));
        }
        if let Some(d) = self.older_than {
            parts.push(format!("--older-than {}s", d.as_secs()));
        }
        if let Some(d) = self.newer_than {
            parts.push(format!("--newer-than {}s", d.as_secs()));
        }
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_given_filter_must_match() {
        let letter = LetterView {
            message_id: Some("m1".into()),
            job_id: Some("j1".into()),
            reason: Some("contract".into()),
            collection: Some("c".into()),
            age_ms: Some(90_000),
            ..LetterView::default()
        };
        let by = |f: FilterArgs| f.matches(&letter);
        assert!(by(FilterArgs::default()));
        assert!(by(FilterArgs { ids: vec!["x".into(), "j1".into()], ..Default::default() }));
        assert!(!by(FilterArgs { ids: vec!["x".into()], ..Default::default() }));
        assert!(by(FilterArgs { reason: Some("contract".into()), collection: Some("c".into()), ..Default::default() }));
        assert!(!by(FilterArgs {
            reason: Some("contract".into()),
            collection: Some("d".into()),
            ..Default::default()
        }));
        assert!(by(FilterArgs { older_than: Some(Duration::from_secs(60)), ..Default::default() }));
        assert!(!by(FilterArgs { newer_than: Some(Duration::from_secs(60)), ..Default::default() }));
        let timeless = LetterView { age_ms: None, ..letter.clone() };
        assert!(!FilterArgs { older_than: Some(Duration::ZERO), ..Default::default() }.matches(&timeless));
    }
}
