"""Summarise a py-spy `--format raw` profile (collapsed stacks, one `frame;frame;... count` per
line): samples per thread, the functions with the most self time (the leaf frame) and with the
most inclusive time (anywhere on the stack, counted once per sample).

    python -m bench.peers.profile_summary bench/results/devhost.pyspy.txt [--top 30] [--grep S]

`--children FUNC` splits one function's samples by what it calls (e.g. `Engine._entity_batch`).
`--callers FUNC --within devhost/` splits one function's samples by its nearest caller whose
text contains `devhost/` (who pays for the JSON, the commits).
`--breakdown` sorts the samples into devhost's jobs (episodes, entity batches, HTTP, activities).
`--grep` keeps only samples whose stack contains S (e.g. `call_llm`) to see inside one path.
Percentages are of all samples kept; at `--rate R`, samples / R = seconds of that thread busy.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def function(frame: str) -> str:
    """`func (file:line)` -> `func (file)`: lines of one function are merged."""
    match = FRAME.match(frame)
    return f"{match['func']} ({match['file']})" if match else frame


def load(path: Path, grep: str | None):
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack or not count.isdigit() or (grep and grep not in stack):
            continue
        frames = stack.split(";")
        yield frames[0], [function(f) for f in frames[1:]], int(count)


def children(path: Path, name: str, top: int = 20) -> str:
    """What the function `name` (its `func (file)` text, or a prefix of it) spends its samples
    on: the frame right below its outermost occurrence, or `(self)`."""
    below, total = Counter(), 0
    for _, frames, count in load(path, name):
        at = next((i for i, f in enumerate(frames) if f.startswith(name)), None)
        if at is None:
            continue
        total += count
        below[frames[at + 1] if at + 1 < len(frames) else "(self)"] += count
    out = [f"{total} samples in {name!r}; split by the frame it calls:"]
    out += [f"  {n:7d} {n / total:6.1%}  {f}" for f, n in below.most_common(top)] if total else []
    return "\n".join(out)


def callers(path: Path, name: str, within: str, top: int = 20) -> str:
    """Who spends the samples of `name` (innermost occurrence): the nearest frame above it whose
    text contains `within` (e.g. `devhost/` to name the engine or store function)."""
    above, total = Counter(), 0
    for _, frames, count in load(path, name):
        at = max((i for i, f in enumerate(frames) if f.startswith(name)), default=None)
        if at is None:
            continue
        total += count
        caller = next((f for f in reversed(frames[:at]) if within in f), "(none)")
        above[caller] += count
    out = [f"{total} samples in {name!r}; split by the nearest caller matching {within!r}:"]
    out += [f"  {n:7d} {n / total:6.1%}  {f}" for f, n in above.most_common(top)] if total else []
    return "\n".join(out)


# devhost's jobs, for --breakdown: the first rule whose every fragment is on the stack wins.
JOBS = [
    ("episode: SDK orchestrator code (replay, actions)", ("Engine._episode", "_call_handle")),
    ("episode: commit (Store.* + SQLite COMMIT)", ("Engine._commit_episode",)),
    ("episode: the rest (load, decide, documents)", ("Engine._episode",)),
    ("entity batch: SDK entity code (state (de)serialised)", ("Engine._entity_batch",
                                                               "_call_handle")),
    ("entity batch: the rest (load, commit)", ("Engine._entity_batch",)),
    ("HTTP /api trigger: the app's function, SDK client calls", ("handle_trigger",)),
    ("HTTP management API (the SDK client's loopback calls)", ("RequestHandler._handle_request",)),
    ("activity call_llm (threads; openai client)", ("call_llm",)),
    ("activity threads: idle/hand-off", ("concurrent/futures/thread.py",)),
    ("pacing and waking", ("Engine._paced_episode",)),
    ("event loop: the rest (selector, callbacks, client sockets)", ("asyncio/",)),
]


def breakdown(path: Path) -> str:
    jobs, total = Counter(), 0
    for _, frames, count in load(path, None):
        total += count
        stack = ";".join(frames)
        jobs[next((name for name, parts in JOBS if all(p in stack for p in parts)),
                  "other")] += count
    out = [f"{total} samples by devhost job:"]
    out += [f"  {n:7d} {n / total:6.1%}  {name}" for name, n in jobs.most_common()]
    return "\n".join(out)


def summarise(path: Path, top: int = 30, grep: str | None = None) -> str:
    threads, own, inclusive = Counter(), Counter(), Counter()
    total = 0
    for thread, frames, count in load(path, grep):
        total += count
        threads[re.sub(r"\(\d+\)", "", thread).strip()] += count
        if frames:
            own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return "no samples"
    out = [f"{total} samples" + (f" whose stack contains {grep!r}" if grep else ""), "",
           "by thread:"]
    out += [f"  {n:7d} {n / total:6.1%}  {name}" for name, n in threads.most_common(8)]
    out += ["", f"top {top} by self time (leaf frame):"]
    out += [f"  {n:7d} {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    out += ["", f"top {top} by inclusive time:"]
    out += [f"  {n:7d} {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--grep")
    parser.add_argument("--children", metavar="FUNC",
                        help="split FUNC's samples by the function it calls")
    parser.add_argument("--callers", metavar="FUNC",
                        help="split FUNC's samples by its nearest caller matching --within")
    parser.add_argument("--within", default="devhost/")
    parser.add_argument("--breakdown", action="store_true", help="samples by devhost job")
    args = parser.parse_args()
    if args.breakdown:
        print(breakdown(args.file))
    elif args.callers:
        print(callers(args.file, args.callers, args.within, args.top))
    elif args.children:
        print(children(args.file, args.children, args.top))
    else:
        print(summarise(args.file, args.top, args.grep))


if __name__ == "__main__":
    main()
