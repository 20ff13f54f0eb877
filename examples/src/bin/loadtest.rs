//! The load test of the HASIVU API:
//! `cargo run --release -p hasivu-examples --bin loadtest [-- --full]`.
//!
//! Start the API first with `HASIVU_TRUSTED_PROXIES=127.0.0.1/32`, so that
//! it believes the `X-Forwarded-For` of each simulated client. Exits with 1
//! when a threshold fails, 2 when the run itself fails.

use std::{path::PathBuf, process::ExitCode};

use hasivu_examples::loadtest::{self, Options};

const USAGE: &str = "\
usage: loadtest [--full] [--host URL] [--output DIR] [--demo-users N] [--open-rps N] [--no-open] [--quiet]

  --full          the report's users and durations (about 22 minutes); default: a short run (under 2 minutes)
  --host URL      the API (default http://127.0.0.1:8080)
  --output DIR    HTML reports and summary.json (default target/loadtest)
  --demo-users N  seeded users to cycle through, the API's HASIVU_USERS (default 1000)
  --open-rps N    arrival rate of the open-model run (default 150, 200 with --full)
  --no-open       skip the open-model run
  --quiet         no running metrics and no goose tables, only the summary";

fn parse() -> Result<Options, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--full");
    let mut options = if full {
        Options::full("http://127.0.0.1:8080")
    } else {
        Options::short("http://127.0.0.1:8080")
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--full" => {}
            "--host" => options.host = value("--host")?.trim_end_matches('/').to_owned(),
            "--output" => options.output_dir = PathBuf::from(value("--output")?),
            "--demo-users" => {
                options.demo_users = value("--demo-users")?
                    .parse()
                    .map_err(|_| "--demo-users: a number".to_owned())?;
            }
            "--open-rps" => {
                let rps = value("--open-rps")?
                    .parse()
                    .map_err(|_| "--open-rps: a number".to_owned())?;
                if let Some(open) = &mut options.open {
                    open.rps = rps;
                }
            }
            "--no-open" => options.open = None,
            "--quiet" => {
                options.progress_secs = None;
                options.print_metrics = false;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse() {
        Ok(options) => options,
        Err(message) => {
            if message.is_empty() {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("{message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match loadtest::run(&options).await {
        Ok(summary) => {
            println!("\n{}", summary.table());
            println!(
                "HTML reports and summary.json in {}",
                options.output_dir.display()
            );
            if summary.passed {
                ExitCode::SUCCESS
            } else {
                println!("a threshold failed");
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("load test failed: {error}");
            ExitCode::from(2)
        }
    }
}
