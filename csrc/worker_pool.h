// A process-wide pool of worker threads that stay warm between batches. Plain C++: no Python.
//
// Why not a std::thread per batch: on virtual machines, starting a thread (or waking a sleeping
// one) costs 50-300 us, as long as scoring a whole 8192-completion batch takes, so a second
// thread bought 1.1-1.4x instead of ~2x. Pool workers spin for a short while after each job
// before they sleep, so back-to-back batches reach them at once.
#pragma once
#include <cstdint>

namespace dprl {

// One part of a job: fn(ctx, k) for k in [0, parts).
using PartFn = void (*)(void* ctx, int64_t part);

// Runs fn(ctx, 0) on the calling thread and fn(ctx, k), 0 < k < parts, on pool workers; returns
// once every part has finished, rethrowing the first exception a part threw. Returns false
// without running anything when the pool can't take the job (more parts than workers + 1, or
// another thread is using the pool right now); the caller then uses threads of its own.
bool pool_run(int64_t parts, PartFn fn, void* ctx);

// Workers in this process's pool (hardware threads - 1, created on first use).
int64_t pool_workers();

}  // namespace dprl
