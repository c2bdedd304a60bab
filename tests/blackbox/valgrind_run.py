"""A short 3-node run of craftd under valgrind memcheck: start, a few adds
(at the leader and through followers), SIGTERM every node; then the
verdict of each node's valgrind log.

    CRAFTD=build/src/craftd /usr/bin/python3 tests/blackbox/valgrind_run.py [--keep DIR]

Exit status 0 when every node exited 0 and valgrind reported no error and no
definitely or indirectly lost block (with tests/blackbox/valgrind.supp).
CTest runs it as craftd_valgrind (about a minute).
"""

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "harness"))

from pytest_craft import cluster as cc  # noqa: E402

SUPP = HERE / "valgrind.supp"

# Slower timing than the default: valgrind slows craftd down 20-50 times.
TIMING = ["--election-timeout", "2000", "--heartbeat", "200", "--rpc-timeout", "5000"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="directory for data and logs (default: a temporary one)")
    ap.add_argument("--no-supp", action="store_true", help="run without valgrind.supp")
    ap.add_argument("--adds", type=int, default=10)
    ap.add_argument("--leader-first", action="store_true",
                    help="SIGTERM the leader first (default: last, after its peers)")
    ap.add_argument("--strict", action="store_true",
                    help="count possibly lost blocks (after suppressions) as problems")
    args = ap.parse_args()

    root = Path(args.keep or tempfile.mkdtemp(prefix="craft-valgrind."))
    cc.generate_stubs(root / "stubs")
    wrapper = [
        "valgrind",
        "--leak-check=full",
        "--show-leak-kinds=definite,indirect,possible",
        "--errors-for-leak-kinds=definite,indirect",
        "--track-origins=yes",
        "--num-callers=30",
        "--log-file={root}/valgrind.n{id}.log",
    ]
    if not args.no_supp:
        wrapper.insert(1, f"--suppressions={SUPP}")
    c = cc.Cluster(root / "cluster", n=3, extra_args=TIMING, wrapper=wrapper)
    print(f"craftd: {c.craftd}\ndata and logs: {c.root}")
    ok = True
    try:
        c.start()
        lid = c.wait_for_leader(deadline=60)
        print(f"leader: node {lid}")
        cid = 4242
        total = 0
        nodes = sorted(c.nodes.values(), key=lambda n: n.id)
        for k in range(args.adds):
            r = cc.add_acked(nodes[k % 3], k, 5, cid, k + 1, deadline=30)
            total += r.sum
        st = c.wait_converged(deadline=30, total=total)
        print(f"{args.adds} adds acknowledged, total {st.total} everywhere")
        order = sorted(nodes, key=lambda n: (n.id == lid) != args.leader_first)
        for n in order:
            started = time.monotonic()
            rc = n.terminate(deadline=60)
            print(f"node {n.id}: SIGTERM -> exit status {rc} "
                  f"after {time.monotonic() - started:.1f} s")
            ok = ok and rc == 0
    finally:
        c.cleanup()

    for n in sorted(c.nodes.values(), key=lambda n: n.id):
        log = c.root / f"valgrind.n{n.id}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        summary = re.search(r"ERROR SUMMARY: (\d+) errors", text)
        lost = {
            kind: int(m.group(1).replace(",", ""))
            for kind in ("definitely", "indirectly", "possibly")
            for m in [re.search(kind + r" lost: ([\d,]+) bytes", text)]
            if m
        }
        errors = int(summary.group(1)) if summary else None
        print(f"node {n.id}: valgrind errors={errors} lost bytes={lost} ({log})")
        if errors != 0:
            ok = False
        for rec in re.findall(
            r"==\d+== ([\d,]+ bytes in [\d,]+ blocks are possibly lost.*?)\n==\d+== \n",
            text,
            re.S,
        ):
            frames = [
                m.group(1)
                for m in re.finditer(r"by 0x[0-9A-F]+: (\S+?)[(<]", rec)
            ]
            print(f"    {rec.splitlines()[0]}: {' <- '.join(frames[:5])}")
            if args.strict:
                ok = False
    print("valgrind run: " + ("clean" if ok else "PROBLEMS (see the logs above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
