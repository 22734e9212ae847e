//! `signal`: opting in to discovery, signed with the node key.

use super::CommandError;
use crate::clock::now;
use crate::home::Home;
use crate::signal::SignalArgs;

/// Prints the DNS TXT record and writes the well-known document and the QR
/// code (what `args` asks for).
pub fn signal(home: &Home, args: &SignalArgs) -> Result<(), CommandError> {
    print!("{}", crate::signal::run(&home.key()?, args, now())?);
    Ok(())
}
