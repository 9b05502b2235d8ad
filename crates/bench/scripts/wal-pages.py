#!/usr/bin/env python3
"""Where the pages of a SQLite commit go: frames per commit in the WAL, by table or index.

    crates/bench/scripts/wal-pages.py DATA_DIR [--samples N] [--every SECONDS] [--top N]

Run it while a load runs against a server whose data directory is DATA_DIR (for a server
started by `trueline-bench --spawn`, the directory the server's open files name, e.g.
`ls -l /proc/$(pgrep -n -x trueline)/fd`). It copies `trueline.db` and `trueline.db-wal`
into a temporary directory (the copy of a WAL being written may end in a torn frame: the
reading stops at the first frame whose salt does not match the header), reads every frame
header of the WAL's current generation (page number, and the commit marker that ends a
transaction), and names the b-tree each page belongs to with SQLite's `dbstat` table,
queried on the copy (its WAL replayed). Under load the WAL starts over several times a
second, so one copy holds few commits: `--samples` copies that many times (`--every`
seconds apart) and counts each commit once. Standard library only; needs a `sqlite3` module
built with `SQLITE_ENABLE_DBSTAT_VTAB` (Debian's is).

A WAL frame is a whole page, written once to the WAL by the commit and once more into the
database file by the checkpoint, so pages per commit are what a write costs in bytes and in
`pwrite` calls (two per frame). See docs/benchmarks.md, "Where a `spread` commit's pages go".
"""

import argparse
import collections
import os
import shutil
import sqlite3
import statistics
import struct
import sys
import tempfile
import time

WAL_HEADER = struct.Struct(">IIIIIIII")  # magic, version, page size, ckpt seq, salts, cksums
FRAME_HEADER = struct.Struct(">IIII")  # page, db size after commit (0 if not a commit), salts


def commits_in_wal(wal: bytes):
    """The page numbers of each complete transaction in the WAL's current generation, keyed
    by (generation's salts, place in it)."""
    if len(wal) < WAL_HEADER.size:
        return 0, {}
    _, _, page_size, _, salt1, salt2, _, _ = WAL_HEADER.unpack_from(wal)
    commits, pages, offset = {}, [], WAL_HEADER.size
    while offset + 24 + page_size <= len(wal):
        page, commit_size, s1, s2 = FRAME_HEADER.unpack_from(wal, offset)
        if (s1, s2) != (salt1, salt2):
            break  # a frame of an earlier generation, or a torn copy
        pages.append(page)
        if commit_size:
            commits[(salt1, salt2, len(commits))] = pages
            pages = []
        offset += 24 + page_size
    return page_size, commits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("--samples", type=int, default=10, help="copies taken (default 10)")
    parser.add_argument("--every", type=float, default=0.3, help="seconds between copies")
    parser.add_argument("--top", type=int, default=15, help="b-trees listed (default 15)")
    args = parser.parse_args()
    db = os.path.join(args.data_dir, "trueline.db")
    commits, page_size = {}, 0
    with tempfile.TemporaryDirectory(prefix="wal-pages-") as tmp:
        copy = os.path.join(tmp, "copy.db")
        for sample in range(max(1, args.samples)):
            if sample:
                time.sleep(args.every)
            # The WAL first: frames it names that are newer than the database copy are
            # still in it when the database is copied a moment later.
            shutil.copyfile(db + "-wal", copy + "-wal")
            with open(copy + "-wal", "rb") as f:
                page_size, found = commits_in_wal(f.read())
            commits.update(found)
        if not commits:
            print("no complete transaction in the WAL (it may just have started over); run again")
            return 1
        # Pages are named as of the last copy; a page freed or reused since an earlier copy
        # is named by its use now (rare: b-trees of a running server mostly grow).
        shutil.copyfile(db, copy)
        conn = sqlite3.connect(copy)
        try:
            owner = {
                page: (name, kind)
                for name, page, kind in conn.execute("SELECT name, pageno, pagetype FROM dbstat")
            }
        except sqlite3.OperationalError as e:
            print(f"this Python's SQLite has no dbstat table ({e})", file=sys.stderr)
            return 2
        finally:
            conn.close()
    commits = list(commits.values())
    per_commit = [len(c) for c in commits]
    by_tree = collections.Counter()
    for pages in commits:
        for page in pages:
            by_tree[owner.get(page, ("(freed or new since the copy)", ""))] += 1
    n = len(commits)
    print(f"page size {page_size} B; {n} commits in {args.samples} copies of the WAL")
    print(
        f"frames per commit: mean {statistics.mean(per_commit):.1f}, "
        f"median {statistics.median(per_commit):.0f}, max {max(per_commit)}"
    )
    print(f"{'pages/commit':>12}  b-tree (page kind)")
    for (name, kind), count in by_tree.most_common(args.top):
        print(f"{count / n:12.1f}  {name} ({kind})")
    rest = sum(by_tree.values()) - sum(c for _, c in by_tree.most_common(args.top))
    if rest:
        print(f"{rest / n:12.1f}  the others")
    return 0


if __name__ == "__main__":
    sys.exit(main())
