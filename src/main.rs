//! The `fraudflight` binary: sets up logging and hands over to the library.

// Records are built from many small strings and Arrow allocates a buffer per
// column per batch; mimalloc measured faster than glibc malloc for both.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
