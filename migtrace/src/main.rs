//! The `migtrace` binary: parse the command line, run the subcommand, turn errors into one
//! line and an exit code (2 for bad input, 1 for failures). No backtraces for users.
use clap::Parser;

fn main() {
    let cli = match migtrace::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => match e.kind() {
            clap::error::ErrorKind::DisplayHelp
            | clap::error::ErrorKind::DisplayVersion
            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                // One line, exit 2: clap's first line is the error; its usage hints follow.
                let text = e.render().to_string();
                let first = text
                    .lines()
                    .next()
                    .unwrap_or("bad arguments")
                    .trim_start_matches("error: ");
                eprintln!("migtrace: error: {first} (see --help)");
                std::process::exit(2);
            }
        },
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    if let Err(err) = cli.run() {
        let code = migtrace::error::exit_code(&err);
        // One line: the error and its causes, outermost first.
        let msg = err
            .chain()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(": ");
        eprintln!("migtrace: error: {msg}");
        std::process::exit(code);
    }
}
