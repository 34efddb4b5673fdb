// Execution: each stream is an in-order queue drained by its own worker thread (so streams run
// asynchronously to the host and to each other, ordered only by events), with an optional
// random delay before each operation; grids run their blocks on a pool of OS threads.
#include <cstdarg>
#include <cstdio>
#include <random>

#include "emu.h"

namespace drv {

uint64_t Stream::push(std::function<void()> op) {
    std::lock_guard<std::mutex> l(m);
    const uint64_t seq = ++enqueued;
    q.emplace_back(seq, std::move(op));
    cv.notify_all();
    return seq;
}

uint64_t Stream::tail() {
    std::lock_guard<std::mutex> l(m);
    return enqueued;
}

void Stream::wait_for(uint64_t seq) {
    std::unique_lock<std::mutex> l(m);
    cv.wait(l, [&] { return done >= seq; });
}

bool Stream::idle() {
    std::lock_guard<std::mutex> l(m);
    return done == enqueued;
}

namespace {
void delay() {
    const unsigned max = config().delay_us;
    if (!max) return;
    static thread_local std::minstd_rand rng(std::random_device{}());
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % (max + 1)));
}

void work(Stream* s) {
    for (;;) {
        std::pair<uint64_t, std::function<void()>> op;
        {
            std::unique_lock<std::mutex> l(s->m);
            s->cv.wait(l, [&] { return s->stop || !s->q.empty(); });
            if (s->q.empty()) return;
            op = std::move(s->q.front());
            s->q.pop_front();
        }
        delay();
        op.second();
        t_op = nullptr;
        std::lock_guard<std::mutex> l(s->m);
        s->done = op.first;
        s->cv.notify_all();
    }
}
}  // namespace

void start(Stream* s) { s->worker = std::thread(work, s); }

void drain(Context* c) {
    std::vector<Stream*> all;
    {
        std::lock_guard<std::mutex> l(c->m);
        all = c->streams;
    }
    all.push_back(c->null_stream);
    for (Stream* s : all) s->drain();
}

void destroy(Stream* s) {
    {
        std::lock_guard<std::mutex> l(s->m);
        s->stop = true;
        s->live = false;
        s->cv.notify_all();
    }
    if (s->worker.joinable()) s->worker.join();
}

// The block pool: a grid's blocks are taken one at a time by the pool's threads and by the
// stream worker that launched it.
namespace {
struct Grid {
    const emu_kernel* k;
    const void* bound;
    unsigned grid[3], block[3];
    uint64_t total;
    std::atomic<uint64_t> next{0};
    std::atomic<uint64_t> finished{0};
    std::atomic<int> users{0};  // pool threads inside blocks(); taken only while queued
    std::mutex m;
    std::condition_variable cv;  // finished reached total, or users reached 0
};

struct Pool {
    std::mutex m;
    std::condition_variable cv;
    std::deque<Grid*> grids;
    std::vector<std::thread> threads;
    Pool() {
        for (int i = 1; i < config().threads; ++i) threads.emplace_back([this] { loop(); });
    }
    static void blocks(Grid* g) {
        t_op = g->k->name;
        int first = 1;
        for (;;) {
            const uint64_t b = g->next.fetch_add(1);
            if (b >= g->total) break;
            const unsigned idx[3] = {(unsigned)(b % g->grid[0]), (unsigned)(b / g->grid[0] % g->grid[1]),
                                     (unsigned)(b / ((uint64_t)g->grid[0] * g->grid[1]))};
            g->k->run(g->k->name, g->bound, idx, g->grid, g->block, first);
            first = 0;
            if (g->finished.fetch_add(1) + 1 == g->total) {
                std::lock_guard<std::mutex> l(g->m);
                g->cv.notify_all();
            }
        }
        t_op = nullptr;
    }
    void loop() {
        for (;;) {
            Grid* g;
            {
                std::unique_lock<std::mutex> l(m);
                cv.wait(l, [&] { return !grids.empty(); });
                g = grids.front();
                if (g->next.load() >= g->total) {
                    grids.pop_front();
                    continue;
                }
                g->users.fetch_add(1);
            }
            blocks(g);
            std::lock_guard<std::mutex> l(g->m);
            if (g->users.fetch_sub(1) == 1) g->cv.notify_all();
        }
    }
};
Pool& pool() {
    static Pool* p = new Pool;
    return *p;
}
}  // namespace

void run_grid(const emu_kernel* k, const void* bound, const unsigned grid[3], const unsigned block[3]) {
    Grid g;
    g.k = k;
    g.bound = bound;
    for (int i = 0; i < 3; ++i) g.grid[i] = grid[i], g.block[i] = block[i];
    g.total = (uint64_t)grid[0] * grid[1] * grid[2];
    Pool& p = pool();
    const bool share = g.total > 1 && config().threads > 1;
    if (share) {
        std::lock_guard<std::mutex> l(p.m);
        p.grids.push_back(&g);
        p.cv.notify_all();
    }
    Pool::blocks(&g);
    {
        std::unique_lock<std::mutex> l(g.m);
        g.cv.wait(l, [&] { return g.finished.load() >= g.total; });
    }
    if (share) {
        std::lock_guard<std::mutex> l(p.m);
        for (auto it = p.grids.begin(); it != p.grids.end(); ++it)
            if (*it == &g) {
                p.grids.erase(it);
                break;
            }
    }
    std::unique_lock<std::mutex> l(g.m);
    g.cv.wait(l, [&] { return g.users.load() == 0; });
    t_op = k->name;
}

}  // namespace drv
