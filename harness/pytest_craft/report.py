"""The figures of a scenario run for the report (SCENARIOS.md, "What every
run reports"): one JSON-able record per scenario, and the pieces the
summary table shows."""

from __future__ import annotations

from .proxy import CLIENTS


def _pct(values, q):
    """The q-quantile (0..1) of values, nearest rank; None when empty."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def _ms(x):
    return None if x is None else round(x * 1e3, 2)


def unavailability(ops, faults):
    """For each fault (monotonic s, text): the time from the last operation
    acknowledged before it to the first acknowledged after it, in seconds;
    None when nothing was acknowledged after it."""
    done = sorted(o.complete_ns / 1e9 for o in ops
                  if o.outcome == "ok" and o.complete_ns is not None)
    out = []
    for t, what in faults:
        before = [d for d in done if d <= t]
        after = [d for d in done if d > t]
        if before:
            out.append((what, round(after[0] - before[-1], 3) if after else None))
    return out


def latency_by_phase(ops, faults, final_t):
    """p50/p99 in ms of acknowledged operations by the phase they began in:
    before the first fault, between it and the final heal, after it."""
    first = faults[0][0] if faults else None
    phases = {"before_faults": [], "during_faults": [], "after_heal": []}
    for o in ops:
        if o.outcome != "ok" or o.complete_ns is None:
            continue
        t = o.invoke_ns / 1e9
        lat = (o.complete_ns - o.invoke_ns) / 1e9
        if final_t is not None and t >= final_t:
            phases["after_heal"].append(lat)
        elif first is not None and t >= first:
            phases["during_faults"].append(lat)
        else:
            phases["before_faults"].append(lat)
    return {k: {"ops": len(v), "p50_ms": _ms(_pct(v, 0.5)),
                "p99_ms": _ms(_pct(v, 0.99))}
            for k, v in phases.items() if v}


def report_figures(run, elapsed):
    """SCENARIOS.md's 'What every run reports', as far as this run knows:
    operations (attempted / acked / failed / unknown / lost / duplicated),
    each checker's verdict and time, election times (fault to new leader),
    unavailability windows, recovery time (final heal to convergence),
    terms and leader changes, peer calls and bytes per acknowledged
    operation (from craft-proxy), latency per phase, the seed and the
    timeline."""
    s = run.history.summary()
    checks = getattr(run, "checks", {})
    lost = checks.get("no_lost_writes")
    dup = checks.get("no_duplicates")
    s["lost"] = None if lost is None else lost.figures.get("lost_keys", 0)
    s["duplicated"] = None if dup is None else dup.figures.get("duplicated")
    rec = {"seed": run.seed, "seconds": round(elapsed, 3), "ops": s}
    for name, r in checks.items():
        rec[name] = {"verdict": r.verdict, "seconds": round(r.elapsed_s, 3)}
    for k in ("election_s", "transfer_s"):
        if run.figures.get(k):
            rec[k] = [round(x, 3) for x in run.figures[k]]
    for k in ("recovery_s", "calls_per_add", "bytes_per_add",
              "idle_calls_per_s", "final_applied"):
        if k in run.figures:
            rec[k] = run.figures[k]
    rec["unavailable_s"] = unavailability(run.history.ops, run.faults)
    rec["latency"] = latency_by_phase(run.history.ops, run.faults,
                                      run.figures.get("final_t"))
    terms = {o.term for o in run.history.observations}
    leaders = {(o.term, o.node) for o in run.history.observations
               if o.role == "LEADER"}
    rec["terms"] = len(terms)
    rec["leader_changes"] = max(0, len(leaders) - 1)
    if run.net is not None and s["ok"]:
        try:
            calls = nbytes = 0
            for c in run.net.counters().values():
                if not c.link.startswith(f"{CLIENTS}-"):
                    calls += c.calls
                    nbytes += c.request_bytes + c.response_bytes
            rec["peer_calls_per_op"] = round(calls / s["ok"], 2)
            rec["peer_bytes_per_op"] = round(nbytes / s["ok"], 1)
        except Exception as e:  # the proxy may be gone after a failure
            rec["peer_calls_per_op"] = f"unknown ({type(e).__name__})"
    rec["faults"] = [(round(t - run.t0, 3), w) for t, w in run.faults]
    rec["timeline"] = [(round(t, 3), w) for t, w in run.timeline]
    return rec


def summary_lines(results):
    """The summary table of a run, one line per scenario record: operations
    (attempted, acknowledged, failed, unknown, lost, applied twice), the
    linearizability verdict, the longest unavailability window after a
    fault, the recovery time after the final heal, peer calls per
    acknowledged operation, and every election time."""
    yield (f"{'scenario':<12} {'result':<8} {'s':>6} {'ops':>6} {'ok':>6} "
           f"{'fail':>4} {'unk':>4} {'lost':>4} {'dup':>3} {'lin':<8} "
           f"{'unav s':>6} {'rec s':>5} {'calls':>5}  elections (s)")

    def num(v, fmt):
        return "-" if v is None or isinstance(v, str) else format(v, fmt)

    for r in results:
        ops = r.get("ops", {})
        lin = r.get("linearizable", {}).get("verdict", "-")
        el = ",".join(f"{x:.2f}" for x in r.get("election_s", [])) or "-"
        windows = [w for _, w in r.get("unavailable_s", []) if w is not None]
        yield (f"{r['id']:<12} {r.get('outcome', '?'):<8} "
               f"{r.get('seconds', 0):>6.1f} {ops.get('attempted', 0):>6} "
               f"{ops.get('ok', 0):>6} {ops.get('fail', 0):>4} "
               f"{ops.get('unknown', 0):>4} {num(ops.get('lost'), 'd'):>4} "
               f"{num(ops.get('duplicated'), 'd'):>3} {lin:<8} "
               f"{num(max(windows) if windows else None, '.2f'):>6} "
               f"{num(r.get('recovery_s'), '.2f'):>5} "
               f"{num(r.get('peer_calls_per_op'), '.1f'):>5}  {el}")
