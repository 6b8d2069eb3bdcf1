//! The `wabot` command line; everything it does lives in the library.

/// glibc's allocator spent more than half of the daemon's CPU at saturation
/// (`perf`: `_int_malloc`, `malloc_consolidate`, `unlink_chunk` over the webhook
/// bodies and rows of every batch, freed on other threads); mimalloc's per-thread
/// heaps do not. docs/perf-e2e.md has the before and after.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    wabot::cli::main()
}
