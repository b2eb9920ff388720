// SQLite's own page cache (pcache1), wrapped so that the truncation at the end of every write
// transaction costs what it removes instead of a walk over the whole cache.
//
// Why: SQLite 3.40's b-tree balancing renumbers sibling pages through a temporary key, the
// lock-byte page (1,048,577 with 1 KiB pages), and pcache1 remembers the largest key it ever
// held (`iMaxKey`) until the next truncation. Every commit truncates the cache to the database
// size (`pager_end_transaction`), and with `iMaxKey` that far above it pcache1 walks every hash
// bucket and every page header of the cache: ~1,800 pages, one cache miss each, about 1.3 ms on
// this machine, after every commit whose balancing renumbered a page. The queue's retention
// deletes whole log rows each group commit, so its databases rebalance nearly every commit:
// 10-12 % of the full-scale crash's CPU was this walk.
//
// How: the wrapper keeps, per cache, a low-water key (`watermark`, the last truncation's limit)
// and the keys of the pages created or renumbered at or above it since (`recent`). Invariant:
// every page in the cache whose key is >= watermark has its key in `recent`. A truncation to
// `limit` >= watermark then only has to drop the recent keys >= limit (looked up and discarded
// one by one); a truncation below the watermark, or after `recent` overflowed, is pcache1's own.
// Either way the new watermark is `limit`, with `recent` empty: nothing at or above it is left.
// The pages themselves, their memory and the LRU stay pcache1's.
//
// Behaviour is SQLite's: the same pages are dropped, only found another way; reads and writes
// do not change, so neither does any simulated run (digests are the same with and without it).
#pragma once

#include <cstdint>

namespace msgsim::sql {

// What the wrapper did since it was installed (every cache of the process together).
struct PageCacheStats {
  uint64_t truncations = 0;         // calls, either way
  uint64_t truncations_walked = 0;  // handed to pcache1 (below the watermark, or overflowed)
  uint64_t pages_dropped = 0;       // by the wrapper's own truncations
  uint64_t lock_page_renumbers = 0; // renumberings through a key at or past 2^20 (see above)
};

// Installs the wrapper as SQLite's page cache. SQLite accepts a page cache only before it is
// initialised: returns false, changing nothing, when SQLite already is (its own cache stays,
// which is correct, only slower). Call once, before the first database is opened.
bool install_page_cache();

// Whether the wrapper is SQLite's page cache in this process.
bool page_cache_installed();

PageCacheStats page_cache_stats();

}  // namespace msgsim::sql
