#include "worker_pool.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>

namespace dprl {
namespace {

// How long a worker keeps polling for the next job before it sleeps: long enough to bridge the
// Python work between reward calls that come in a row, short enough to cost nothing next to a
// training step (OpenMP runtimes poll for 0.2-200 ms). Waking a sleeping worker costs ~0.25 ms
// on a 2-vCPU virtual machine, a quarter of an 8192-completion batch. DPRL_POOL_SPIN_US
// overrides it (0: sleep at once).
constexpr int64_t kDefaultSpinUs = 10000;

std::chrono::microseconds spin_time() {
  const char* env = std::getenv("DPRL_POOL_SPIN_US");
  if (env == nullptr || *env == '\0') return std::chrono::microseconds(kDefaultSpinUs);
  char* end = nullptr;
  const long long us = std::strtoll(env, &end, 10);
  if (*end != '\0' || us < 0) return std::chrono::microseconds(kDefaultSpinUs);
  return std::chrono::microseconds(us);
}
constexpr int kMaxWorkers = 255;  // helper counts travel in the low 16 bits of the job word

class Pool {
 public:
  explicit Pool(int workers) : workers_(workers), spin_(spin_time()) {
    // Detached: the pool lives as long as the process, and joining at exit could wait on a
    // worker that the interpreter's shutdown has frozen.
    for (int w = 1; w <= workers; ++w) std::thread(&Pool::loop, this, w).detach();
  }

  int64_t workers() const { return workers_; }

  // Wakes sleeping workers so that they poll for the next job: a caller about to hand one out
  // overlaps their wake-up with its own preparation. A job word with zero helpers runs nothing.
  void wake() {
    if (sleepers_.load() == 0) return;
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return;  // a job is running: its workers are awake
    generation_ += 1;
    job_.store(generation_ << 16);
    std::lock_guard<std::mutex> lock(sleep_);
    wake_.notify_all();
  }

  bool run(int64_t chunks, int64_t helpers, PartFn fn, void* ctx) {
    if (chunks < 2 || helpers < 1 || helpers > workers_) return false;
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    fn_ = fn;
    ctx_ = ctx;
    chunks_ = chunks;
    error_ = nullptr;
    next_.store(0, std::memory_order_relaxed);
    generation_ += 1;
    open_.store(generation_);  // publishes the fields above to any worker that sees it
    // One word carries the generation and how many workers may help, so a worker that is not
    // asked (its index is past `helpers`) never reads fields the next job is overwriting.
    job_.store((generation_ << 16) | static_cast<uint64_t>(helpers));
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lock(sleep_);
      wake_.notify_all();
    }
    take_chunks();
    // Every chunk is taken. Close the job, then wait for the workers still inside it; a worker
    // that arrives later sees it closed and leaves its fields alone (both sides sequentially
    // consistent: a worker counts itself in before it looks, the caller closes before it counts).
    open_.store(0);
    while (active_.load() > 0) std::this_thread::yield();
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  void call(int64_t chunk) {
    try {
      fn_(ctx_, chunk);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }

  // Runs chunks from the shared counter until none is left.
  void take_chunks() {
    for (int64_t k; (k = next_.fetch_add(1, std::memory_order_relaxed)) < chunks_;) call(k);
  }

  void loop(int index) {
    uint64_t seen = 0;
    bool poll = false;
    for (;;) {
      // Only a worker that was asked to help, or woken for a job to come, keeps polling; the
      // others (a job wanting fewer threads than the pool has) go back to sleep at once.
      seen = wait_for_job(seen, poll ? spin_ : std::chrono::microseconds(0));
      const int64_t helpers = static_cast<int64_t>(seen & 0xffff);
      if (index <= helpers) {
        active_.fetch_add(1);
        if (open_.load() == seen >> 16) take_chunks();  // else it ended before this worker woke
        active_.fetch_sub(1, std::memory_order_release);
      }
      poll = index <= helpers || helpers == 0;
    }
  }

  // Spins for `spin`, then sleeps until the job word differs from `seen`; returns the new word.
  uint64_t wait_for_job(uint64_t seen, std::chrono::microseconds spin) {
    const auto deadline = std::chrono::steady_clock::now() + spin;
    for (int spins = 0;; ++spins) {
      const uint64_t job = job_.load(std::memory_order_acquire);
      if (job != seen) return job;
      if ((spins & 63) == 63 && std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::yield();
    }
    // sleepers_ is raised before the job word is checked again and run() reads it after
    // publishing the job (both sequentially consistent), so a job can't slip past a sleeper.
    std::unique_lock<std::mutex> lock(sleep_);
    sleepers_ += 1;
    wake_.wait(lock, [&] { return job_.load() != seen; });
    sleepers_ -= 1;
    return job_.load(std::memory_order_acquire);
  }

  const int64_t workers_;
  const std::chrono::microseconds spin_;
  std::mutex busy_;  // one job at a time; a second caller falls back to its own threads
  uint64_t generation_ = 0;
  std::atomic<uint64_t> job_{0};
  PartFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t chunks_ = 0;
  std::atomic<int64_t> next_{0};       // the next chunk to take
  std::atomic<uint64_t> open_{0};      // generation of the job that can still be joined, or 0
  std::atomic<int64_t> active_{0};     // workers inside a job
  std::mutex sleep_;
  std::condition_variable wake_;
  std::atomic<int> sleepers_{0};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

// The pool of this process. A child made by fork() inherits the pool object but not its
// threads, so it builds its own (the parent's object is left alone: its locks may be held).
Pool& pool() {
  static std::mutex mutex;
  static Pool* current = nullptr;
  static pid_t owner = 0;
  std::lock_guard<std::mutex> lock(mutex);
  if (current == nullptr || owner != getpid()) {
    const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    current = new Pool(std::min(hw - 1, kMaxWorkers));
    owner = getpid();
  }
  return *current;
}

}  // namespace

bool pool_run(int64_t chunks, int64_t helpers, PartFn fn, void* ctx) {
  return pool().run(chunks, helpers, fn, ctx);
}

void pool_wake() { pool().wake(); }

int64_t pool_workers() { return pool().workers(); }

}  // namespace dprl
