//! The `fraudflight` binary: sets up logging and hands over to the library.

fn main() -> std::process::ExitCode {
    fraudflight::logging::init();
    match fraudflight::cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
