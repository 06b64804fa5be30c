//! Collecting documents to enqueue from files, directory trees and stdin, with ids from their relative paths.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// A document read from disk or stdin.
#[derive(Debug)]
pub struct SourceDocument {
    pub document_id: String,
    pub text: String,
}

/// Files that could not be used, with why.
#[derive(Debug, Default)]
pub struct Skipped(pub Vec<(PathBuf, String)>);

/// Reads every document named by `paths`. A directory's files get their path relative to that directory as
/// id (with `/` separators); a file given directly gets its path as written; `-` is stdin.
pub fn collect(
    paths: &[PathBuf],
    stdin_id: Option<&str>,
    extensions: &[String],
) -> anyhow::Result<(Vec<SourceDocument>, Skipped)> {
    let mut documents = Vec::new();
    let mut skipped = Skipped::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let Some(id) = stdin_id else { bail!("reading from stdin (`-`) needs --document-id") };
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("stdin is not valid UTF-8 text")?;
            documents.push(SourceDocument { document_id: id.to_owned(), text });
        } else if path.is_dir() {
            let mut files = Vec::new();
            walk(path, &mut files).with_context(|| format!("reading directory {}", path.display()))?;
            files.sort();
            for file in files {
                if !has_extension(&file, extensions) {
                    continue;
                }
                let relative = file.strip_prefix(path).unwrap_or(&file);
                let id = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                read_into(&file, id, &mut documents, &mut skipped);
            }
        } else if path.is_file() {
            read_into(path, path.to_string_lossy().into_owned(), &mut documents, &mut skipped);
        } else {
            bail!("{} is neither a file nor a directory", path.display());
        }
    }
    Ok((documents, skipped))
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), files)?;
        } else if kind.is_file() {
            files.push(entry.path());
        }
    }
    Ok(())
}

fn has_extension(path: &Path, extensions: &[String]) -> bool {
    let wanted: Vec<&str> =
        extensions.iter().map(|e| e.trim().trim_start_matches('.')).filter(|e| !e.is_empty()).collect();
    if wanted.is_empty() {
        return true;
    }
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| wanted.iter().any(|w| w.eq_ignore_ascii_case(e)))
}

fn read_into(path: &Path, document_id: String, documents: &mut Vec<SourceDocument>, skipped: &mut Skipped) {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => documents.push(SourceDocument { document_id, text }),
            Err(e) => skipped
                .0
                .push((path.to_owned(), format!("not UTF-8 text (bad byte at {})", e.utf8_error().valid_up_to()))),
        },
        Err(e) => skipped.0.push((path.to_owned(), e.to_string())),
    }
}
