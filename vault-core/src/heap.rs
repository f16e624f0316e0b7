//! Giving the allocator's free memory back to the system after a large one-off job.
//!
//! Opening a vault and warming its key cache read the whole store once: sled's recovery at open
//! and the warm's reads and decryptions of a million records allocate and free far more than
//! what stays (the cache itself). glibc keeps what was freed in its arenas for later
//! allocations, resident where it was touched: after the warm of a million keys about 90 bytes
//! per key were free (`mallinfo2` in the load bench's measuring process), and nothing after the
//! warm reuses most of it. `malloc_trim` hands the whole free pages of every arena back
//! (`madvise`), which took 22 bytes per key off resident memory there (the rest of the free
//! bytes lie in pages partly in use). It takes each arena's lock in turn while it walks its free
//! chunks (milliseconds), so it runs once, off the verify path, never per request.
//!
//! It reaches glibc's malloc only. A program whose global allocator is another (the `keyvault`
//! binary uses mimalloc) leaves little in glibc's arenas, and its allocator returns freed pages
//! by itself (mimalloc after a short delay), so there the call costs a walk and frees little.

/// Hands the allocator's free pages back to the system (glibc only; elsewhere nothing).
pub(crate) fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = std::time::Instant::now();
        // SAFETY: malloc_trim(3) takes a byte count to keep at the heap's top and touches only
        // the allocator's own state, under its locks; any thread may call it at any time.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            released = released == 1,
            seconds = started.elapsed().as_secs_f64(),
            "free memory given back to the system"
        );
    }
}
