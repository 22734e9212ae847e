//! `audit` and `audit verify`: the local journal in plain words, and its
//! hash chain checked.

use super::{CommandError, journal_path};
use crate::describe;
use crate::home::Home;
use crate::journal;

/// `audit`: every journal entry in plain words.
pub fn show(home: &Home) -> Result<(), CommandError> {
    let entries = journal::read_if_any(&journal_path(home))?;
    if entries.is_empty() {
        println!("the journal is empty");
    }
    for e in &entries {
        println!("{}", describe::journal_entry(e));
    }
    Ok(())
}

/// `audit verify`: fails naming the first broken line.
pub fn verify(home: &Home) -> Result<(), CommandError> {
    let path = journal_path(home);
    let entries = journal::read_if_any(&path)?;
    let findings = journal::verify(&entries);
    if let Some(first) = findings.first() {
        for f in &findings {
            eprintln!("{}: {}", path.display(), describe::finding(f));
        }
        return Err(CommandError::Tampered { line: first.line() });
    }
    println!(
        "{}: {} entries, chain intact",
        path.display(),
        entries.len()
    );
    Ok(())
}
