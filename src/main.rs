use std::process::ExitCode;

/// jemalloc instead of glibc's malloc. The operator keeps one small cached object per
/// resource while it parses watch events and writes thousands of others in between;
/// with glibc those long-lived allocations end up scattered among freed ones. At 10,000
/// resources the peak resident memory was 54.5 MiB with glibc and 46.8 MiB with jemalloc
/// configured as below (`cargo bench --bench converge`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A C string pointer that jemalloc reads at start-up.
#[repr(transparent)]
pub struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points to a static string that is never written.
unsafe impl Sync for MallocConf {}

/// jemalloc's settings: two arenas (the operator's work is light and its runtime has one
/// worker thread per core), freed pages returned to the system after one second
/// (`dirty_decay_ms`) instead of ten, and none kept in the lazily-freed state
/// (`muzzy_decay_ms`), so a burst (a relist, a rollout) does not hold its memory long.
/// `_RJEM_MALLOC_CONF` in the environment overrides them.
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: MallocConf =
    MallocConf(c"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

fn main() -> ExitCode {
    shadowsync::cli::main()
}
