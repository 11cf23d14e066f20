//! The CLI reference (docs/reference/cli.md) checked against the commands
//! themselves: every command clap knows (hidden ones aside) has a row naming
//! it, every long option of it is named in that row, and every global option
//! is named on the page. A command or flag added without its docs fails here.

use super::Cli;
use clap::CommandFactory;

const REFERENCE: &str = include_str!("../../../docs/reference/cli.md");

/// Each visible command as its words (`["pipeline", "upload"]`) with its own
/// long options (globals and `--help` aside).
fn commands(command: &clap::Command, path: &[String], found: &mut Vec<(Vec<String>, Vec<String>)>) {
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set() && sub.get_name() != "help") {
        let mut words = path.to_vec();
        words.push(sub.get_name().to_string());
        if sub.has_subcommands() {
            commands(sub, &words, found);
        } else {
            let flags = sub
                .get_arguments()
                .filter(|arg| !arg.is_global_set() && !arg.is_hide_set())
                .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
                .filter(|long| long != "--help" && long != "--version")
                .collect();
            found.push((words, flags));
        }
    }
}

#[test]
fn every_command_and_option_has_its_line_in_the_cli_reference() {
    let cli = Cli::command();
    let mut found = Vec::new();
    commands(&cli, &[], &mut found);
    assert!(found.len() > 10, "the walk found the commands: {found:?}");
    let rows: Vec<&str> = REFERENCE.lines().filter(|line| line.starts_with("| `")).collect();
    let mut missing = Vec::new();
    for (words, flags) in &found {
        let name = format!("`{}", words.join(" "));
        let Some(row) = rows.iter().find(|row| row.split(',').any(|cell| cell.trim_start_matches("| ").trim_start().starts_with(&name)))
        else {
            missing.push(format!("no row of docs/reference/cli.md names `{}`", words.join(" ")));
            continue;
        };
        for flag in flags {
            if !row.contains(flag.as_str()) {
                missing.push(format!("the row of `{}` does not name {flag}", words.join(" ")));
            }
        }
    }
    for global in cli.get_arguments().filter_map(|arg| arg.get_long()).filter(|long| *long != "help" && *long != "version") {
        if !REFERENCE.contains(&format!("`--{global}")) {
            missing.push(format!("docs/reference/cli.md does not name the global option --{global}"));
        }
    }
    assert!(missing.is_empty(), "the CLI reference lags the commands:\n{}", missing.join("\n"));
}
