// A process-wide pool of worker threads that stay warm between batches. Plain C++: no Python.
//
// Why not a std::thread per batch: on virtual machines, starting a thread (or waking a sleeping
// one) costs 50-300 us, as long as scoring a whole 8192-completion batch takes, so a second
// thread bought 1.1-1.4x instead of ~2x. Pool workers spin for a short while after each job
// before they sleep, so back-to-back batches reach them at once.
#pragma once
#include <cstdint>

namespace dprl {

// One chunk of a job: fn(ctx, k) for k in [0, chunks).
using PartFn = void (*)(void* ctx, int64_t chunk);

// Runs fn(ctx, k) for every k in [0, chunks) on the calling thread and on up to `helpers` pool
// workers, each taking the next chunk from a shared counter as it finishes one: the caller starts
// at once, and a worker that takes long to wake (a sleeping thread on a virtual machine: as long
// as a whole batch) joins for what is left instead of holding the job up. Returns once every
// chunk has finished, rethrowing the first exception one threw. Returns false without running
// anything when the pool can't take the job (fewer than 2 chunks, more helpers than workers, or
// another thread is using the pool right now); the caller then uses threads of its own.
bool pool_run(int64_t chunks, int64_t helpers, PartFn fn, void* ctx);

// Wakes the pool's sleeping workers (if any) to poll for the next job for a while, as they do
// after a job: a caller that will soon call pool_run with a big batch, but has other work to do
// first (reading its arguments from Python, say), overlaps their wake-up with that work. Cheap
// when they are awake already.
void pool_wake();

// Workers in this process's pool (hardware threads - 1, created on first use).
int64_t pool_workers();

}  // namespace dprl
