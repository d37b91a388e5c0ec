//! Test support: parses the words after `wardenctl <resource>` into that resource's
//! subcommand, or a set of flattened flags, the way clap does inside the whole command tree.

use clap::Parser as _;

#[derive(Debug, clap::Parser)]
struct Subcommand<C: clap::Subcommand> {
    #[command(subcommand)]
    command: C,
}

#[derive(Debug, clap::Parser)]
struct Flags<A: clap::Args> {
    #[command(flatten)]
    flags: A,
}

/// `args` (without the program and resource name) as the subcommand `C`.
pub fn subcommand<C: clap::Subcommand>(args: &[&str]) -> Result<C, clap::Error> {
    Subcommand::<C>::try_parse_from(["wardenctl"].iter().chain(args)).map(|p| p.command)
}

/// `args` as the flags `A` alone.
pub fn flags<A: clap::Args>(args: &[&str]) -> Result<A, clap::Error> {
    Flags::<A>::try_parse_from(["wardenctl"].iter().chain(args)).map(|p| p.flags)
}
