//! The `hoist` command line: parses arguments, shows progress, maps errors to exit codes.

mod cli;

fn main() {
    keep_freed_heap();
    std::process::exit(cli::run());
}

/// Process-wide allocator setting for a program that streams blobs (a choice for the binary,
/// not the library). hyper allocates a fresh read buffer of up to a few hundred KiB for every
/// body chunk that is still held downstream; with glibc's defaults such a buffer is either its
/// own `mmap` or carved from an arena top that is trimmed back on free, so every chunk of a
/// download page-faulted and zeroed fresh pages (`clear_page_erms` + `exc_page_fault` were 10%
/// of a 1 GiB pull in `perf`). Serving buffers under 32 MiB from the heap and trimming only past
/// 128 MiB of free top keeps those pages mapped: a pull takes about 25% fewer CPU samples, and
/// peak RSS stays that of the buffers in flight (about 2 MiB more).
/// The kept pages are per arena, though, and glibc gives up to 8 arenas per core to the threads
/// (tokio workers and blocking pool, gzip workers): a cold 3-stage Dockerfile build over 20,000
/// files peaked at 70-76 MiB RSS for 23 MiB of live heap. One arena per core, at most 4, keeps
/// the threads that can run at once apart and brought that build to 50-60 MiB.
fn keep_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
        // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
            libc::mallopt(libc::M_ARENA_MAX, arenas as libc::c_int);
        }
    }
}
