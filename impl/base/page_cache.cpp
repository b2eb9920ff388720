#include "impl/base/page_cache.h"

#include <sqlite3.h>

#include <atomic>
#include <cstddef>
#include <new>

#include "impl/base/assert.h"

namespace msgsim::sql {
namespace {

// SQLite's own page cache, whose methods the wrapper's call through.
sqlite3_pcache_methods2 base_methods{};
bool installed = false;
// Relaxed atomics: a cache's own state is used by its connection's thread only, but these
// count over every cache of the process, whichever threads their connections run on.
struct AtomicStats {
  std::atomic<uint64_t> truncations{0};
  std::atomic<uint64_t> truncations_walked{0};
  std::atomic<uint64_t> pages_dropped{0};
  std::atomic<uint64_t> lock_page_renumbers{0};
};
AtomicStats stats;

void count(std::atomic<uint64_t>& counter) { counter.fetch_add(1, std::memory_order_relaxed); }

// Keys noted since the last truncation, at most this many; past it the next truncation is
// pcache1's whole walk. A write transaction of the simulated nodes notes a few appended pages
// and ~10 renumberings (each of the lock-byte key, noted once while it repeats).
constexpr size_t kRecentMax = 512;

struct Cache {
  sqlite3_pcache* base = nullptr;
  unsigned watermark = 0;  // every cached page with a key >= this one is in recent[]
  bool overflowed = false;
  size_t recent_count = 0;
  unsigned recent[kRecentMax];
};

Cache& cache_of(sqlite3_pcache* cache) { return *reinterpret_cast<Cache*>(cache); }

void note(Cache& cache, unsigned key) {
  if (key < cache.watermark || cache.overflowed) return;
  // Balancing renumbers through the same temporary key again and again: keep it once.
  const size_t look_back = cache.recent_count < 8 ? cache.recent_count : 8;
  for (size_t i = cache.recent_count - look_back; i < cache.recent_count; ++i) {
    if (cache.recent[i] == key) return;
  }
  if (cache.recent_count == kRecentMax) {
    cache.overflowed = true;
    return;
  }
  cache.recent[cache.recent_count++] = key;
}

int wrapped_init(void*) { return base_methods.xInit(base_methods.pArg); }

void wrapped_shutdown(void*) {
  if (base_methods.xShutdown != nullptr) base_methods.xShutdown(base_methods.pArg);
}

sqlite3_pcache* wrapped_create(int page_bytes, int extra_bytes, int purgeable) {
  // SQLite expects NULL, not an exception, when memory runs out.
  Cache* cache = new (std::nothrow) Cache;
  if (cache == nullptr) return nullptr;
  cache->base = base_methods.xCreate(page_bytes, extra_bytes, purgeable);
  if (cache->base == nullptr) {
    delete cache;
    return nullptr;
  }
  return reinterpret_cast<sqlite3_pcache*>(cache);
}

void wrapped_cachesize(sqlite3_pcache* cache, int pages) { base_methods.xCachesize(cache_of(cache).base, pages); }

int wrapped_pagecount(sqlite3_pcache* cache) { return base_methods.xPagecount(cache_of(cache).base); }

sqlite3_pcache_page* wrapped_fetch(sqlite3_pcache* cache, unsigned key, int create) {
  Cache& c = cache_of(cache);
  sqlite3_pcache_page* page = base_methods.xFetch(c.base, key, create);
  // A lookup without create adds nothing; with it the page may be new (noting an old one too
  // only costs a slot).
  if (page != nullptr && create != 0) note(c, key);
  return page;
}

void wrapped_unpin(sqlite3_pcache* cache, sqlite3_pcache_page* page, int discard) {
  base_methods.xUnpin(cache_of(cache).base, page, discard);
}

void wrapped_rekey(sqlite3_pcache* cache, sqlite3_pcache_page* page, unsigned old_key, unsigned new_key) {
  Cache& c = cache_of(cache);
  base_methods.xRekey(c.base, page, old_key, new_key);
  if (new_key >= (1u << 20)) count(stats.lock_page_renumbers);
  note(c, new_key);
}

void wrapped_truncate(sqlite3_pcache* cache, unsigned limit) {
  Cache& c = cache_of(cache);
  count(stats.truncations);
  if (c.overflowed || limit < c.watermark) {
    count(stats.truncations_walked);
    base_methods.xTruncate(c.base, limit);
  } else {
    // By the invariant, the pages to drop are among the recent keys. Fetching one pins it (if
    // it was not), and unpinning with discard frees it, as pcache1's truncation would.
    for (size_t i = 0; i < c.recent_count; ++i) {
      if (c.recent[i] < limit) continue;
      sqlite3_pcache_page* page = base_methods.xFetch(c.base, c.recent[i], 0);
      if (page == nullptr) continue;
      base_methods.xUnpin(c.base, page, 1);
      count(stats.pages_dropped);
    }
  }
  c.watermark = limit;
  c.recent_count = 0;
  c.overflowed = false;
}

void wrapped_destroy(sqlite3_pcache* cache) {
  Cache* c = &cache_of(cache);
  base_methods.xDestroy(c->base);
  delete c;
}

void wrapped_shrink(sqlite3_pcache* cache) { base_methods.xShrink(cache_of(cache).base); }

}  // namespace

bool install_page_cache() {
  if (installed) return true;
  sqlite3_pcache_methods2 base{};
  if (sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &base) != SQLITE_OK) return false;
  MSGSIM_ASSERT(base.xFetch != nullptr && base.xTruncate != nullptr, "SQLite gave no page cache to wrap");
  base_methods = base;
  static const sqlite3_pcache_methods2 wrapped = {
      .iVersion = 1,
      .pArg = nullptr,
      .xInit = wrapped_init,
      .xShutdown = wrapped_shutdown,
      .xCreate = wrapped_create,
      .xCachesize = wrapped_cachesize,
      .xPagecount = wrapped_pagecount,
      .xFetch = wrapped_fetch,
      .xUnpin = wrapped_unpin,
      .xRekey = wrapped_rekey,
      .xTruncate = wrapped_truncate,
      .xDestroy = wrapped_destroy,
      .xShrink = wrapped_shrink,
  };
  if (sqlite3_config(SQLITE_CONFIG_PCACHE2, &wrapped) != SQLITE_OK) return false;
  installed = true;
  return true;
}

bool page_cache_installed() { return installed; }

PageCacheStats page_cache_stats() {
  PageCacheStats out;
  out.truncations = stats.truncations.load(std::memory_order_relaxed);
  out.truncations_walked = stats.truncations_walked.load(std::memory_order_relaxed);
  out.pages_dropped = stats.pages_dropped.load(std::memory_order_relaxed);
  out.lock_page_renumbers = stats.lock_page_renumbers.load(std::memory_order_relaxed);
  return out;
}

}  // namespace msgsim::sql
