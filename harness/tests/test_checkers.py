"""The checkers' own tests: hand-made histories that must fail and must pass,
the time limit, and properties over simulated histories (hypothesis)."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from pytest_craft.checkers import (OK, UNKNOWN, VIOLATION, check_all,
                                   check_convergence, check_election_safety,
                                   check_linearizable, check_no_duplicates,
                                   check_no_lost_writes, main)
from pytest_craft.history import History, Observation
from reference import brute_linearizable
from simhist import simulate

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - Debian's python3-hypothesis missing
    given = None

MS = 1_000_000


def hist(*ops, **meta) -> History:
    """ops: (client, kind, key, args, t0_ms, t1_ms, outcome, value); t1 None
    for an op in flight or an unknown one."""
    h = History(meta=meta)
    for c, kind, key, args, t0, t1, out, val in ops:
        h.record(c, kind, key, args, invoke_ns=t0 * MS,
                 complete_ns=None if t1 is None else t1 * MS, outcome=out,
                 value=val)
    return h


def put(c, k, v, t0, t1, out="ok"):
    return (c, "put", k, (v,), t0, t1, out, None)


def get(c, k, v, t0, t1, out="ok"):
    return (c, "get", k, (), t0, t1, out, v)


def add(c, a, b, total, t0, t1, out="ok"):
    return (c, "add", None, (a, b), t0, t1, out,
            None if out != "ok" else {"sum": a + b, "total": total})


def read_total(c, v, t0, t1):
    return (c, "total", None, (), t0, t1, "ok", v)


def lin(h, **kw):
    r = check_linearizable(h, **kw)
    # Every verdict on a small history must agree with the brute force.
    if r.verdict != UNKNOWN and len(h.ops) <= 10:
        assert (r.verdict == OK) == brute_linearizable(
            h.ops, kw.get("initial_total", 0) or 0), r.message
    return r


# ---------------------------------------------------------------------------
# Linearizability: must fail


def test_stale_read_after_completed_write_is_caught():
    h = hist(put(1, "k", "a", 0, 10), put(2, "k", "b", 20, 30),
             get(1, "k", "a", 40, 50))
    r = lin(h)
    assert r.verdict == VIOLATION, r
    assert r.details["key"] == "k"
    assert r.details["op"]["id"] == 2
    # the explanation names the op that cannot be placed and the prefix
    assert "op#2" in r.message and "get('k')" in r.message
    assert "op#1 c2 put('k', 'b')" in r.message


def test_read_of_a_never_written_value_is_caught():
    h = hist(put(1, "k", "a", 0, 10), get(2, "k", "zzz", 20, 30))
    r = lin(h)
    assert r.verdict == VIOLATION and "no operation wrote" in r.message


def test_failed_write_must_not_be_seen():
    h = hist(put(1, "k", "a", 0, 10), put(2, "k", "b", 20, 30, "fail"),
             get(1, "k", "b", 40, 50))
    assert lin(h).verdict == VIOLATION


def test_value_cannot_flip_back_after_an_unknown_write_was_seen():
    h = hist(put(1, "k", "a", 0, 10), put(2, "k", "x", 20, None, "unknown"),
             get(1, "k", "x", 30, 40), get(3, "k", "a", 50, 60))
    assert lin(h).verdict == VIOLATION


def test_two_readers_disagreeing_on_order_is_caught():
    # put a and put b concurrent; one reader sees b then a, another a then b.
    h = hist(put(1, "k", "a", 0, 100), put(2, "k", "b", 0, 100),
             get(3, "k", "b", 10, 20), get(3, "k", "a", 30, 40),
             get(4, "k", "a", 10, 20), get(4, "k", "b", 30, 40))
    assert lin(h).verdict == VIOLATION


def test_cas_incr_del_semantics():
    ok = hist(put(1, "k", "5", 0, 1),
              (1, "cas", "k", ("5", "7"), 2, 3, "ok", True),
              (1, "cas", "k", ("5", "9"), 4, 5, "ok", "false"),
              (1, "incr", "k", (3,), 6, 7, "ok", "10"),
              (1, "del", "k", (), 8, 9, "ok", 1),
              (1, "del", "k", (), 10, 11, "ok", 0),
              (1, "cas", "k", ("", "z"), 12, 13, "ok", True),
              get(1, "k", "z", 14, 15))
    assert lin(ok).verdict == OK
    bad = hist(put(1, "k", "5", 0, 1), (1, "incr", "k", (3,), 2, 3, "ok", 9))
    assert lin(bad).verdict == VIOLATION
    bad = hist(put(1, "k", "5", 0, 1),
               (1, "cas", "k", ("5", "7"), 2, 3, "ok", False))
    assert lin(bad).verdict == VIOLATION
    bad = hist((1, "del", "k", (), 0, 1, "ok", True))
    assert lin(bad).verdict == VIOLATION


def test_running_total_stale_read_and_wrong_total_are_caught():
    h = hist(add(1, 5, 3, 8, 0, 10), add(2, 10, -2, 16, 20, 30),
             read_total(1, 8, 40, 50))
    assert lin(h).verdict == VIOLATION
    h = hist(add(1, 5, 3, 8, 0, 10), add(2, 10, -2, 15, 20, 30))
    assert lin(h).verdict == VIOLATION


def test_wrong_sum_is_caught():
    h = hist((1, "add", None, (5, 3), 0, 10, "ok", {"sum": 9, "total": 8}))
    r = lin(h)
    assert r.verdict == VIOLATION and "wrong sum" in r.message


# ---------------------------------------------------------------------------
# Linearizability: must pass


def test_concurrent_overlapping_ops_with_a_valid_order_pass():
    h = hist(put(1, "k", "a", 0, 100), put(2, "k", "b", 10, 50),
             get(3, "k", "b", 20, 30), get(3, "k", "a", 110, 120),
             get(4, "k", "a", 40, 130))
    assert lin(h).verdict == OK


def test_concurrent_adds_in_any_order_pass():
    # three adds overlap; their totals fix the order 2, 3, 1
    h = hist(add(1, 1, 0, 7, 0, 100), add(2, 2, 0, 2, 10, 50),
             add(3, 4, 0, 6, 20, 60), read_total(2, 7, 110, 120))
    assert lin(h).verdict == OK


def test_unknown_write_that_took_effect_passes():
    h = hist(put(1, "k", "a", 0, 10), put(2, "k", "x", 20, 30, "unknown"),
             get(1, "k", "x", 100, 110))
    assert lin(h).verdict == OK


def test_unknown_write_that_did_not_take_effect_passes():
    h = hist(put(1, "k", "a", 0, 10), put(2, "k", "x", 20, 30, "unknown"),
             get(1, "k", "a", 100, 110), get(1, "k", "a", 120, 130))
    assert lin(h).verdict == OK


def test_unknown_write_may_take_effect_long_after_it_was_given_up():
    h = hist(put(1, "k", "a", 0, 10), put(2, "k", "x", 20, 30, "unknown"),
             get(1, "k", "a", 100, 110), get(1, "k", "x", 5000, 5010))
    assert lin(h).verdict == OK


def test_unknown_adds_took_effect_or_not():
    h = hist(add(1, 1, 0, 1, 0, 10), add(2, 2, 0, None, 20, 30, "unknown"),
             add(3, 4, 0, None, 25, None, "unknown"),
             add(1, 8, 0, 13, 40, 50), read_total(1, 13, 60, 70))
    assert lin(h).verdict == OK       # 4 applied, 2 not
    h2 = hist(add(1, 1, 0, 1, 0, 10), add(2, 2, 0, None, 20, 30, "unknown"),
              add(1, 8, 0, 11, 40, 50), add(1, 16, 0, 27, 60, 70))
    assert lin(h2).verdict == OK


def test_unknown_adds_must_fill_the_right_gaps():
    # Unknown adds of 1, 2 and 3; the first gap (3) can be filled by {3} or
    # {1, 2}, but only {3} leaves what the second gap (2) needs.
    h = hist(add(1, 1, 0, None, 0, 1, "unknown"),
             add(2, 2, 0, None, 0, 1, "unknown"),
             add(3, 3, 0, None, 0, 1, "unknown"),
             add(4, 10, 0, 13, 10, 20), add(4, 20, 0, 35, 30, 40))
    assert lin(h).verdict == OK
    h = hist(add(1, 1, 0, None, 0, 1, "unknown"),
             add(2, 2, 0, None, 0, 1, "unknown"),
             add(3, 3, 0, None, 0, 1, "unknown"),
             add(4, 10, 0, 13, 10, 20), add(4, 20, 0, 37, 30, 40))
    assert lin(h).verdict == VIOLATION  # 4 more: no set of what is left


def test_unknown_ops_in_a_chain():
    # the read needs an unknown put and then an unknown incr after it
    h = hist(put(1, "k", "a", 0, 10), put(2, "k", "1", 20, 30, "unknown"),
             (3, "incr", "k", (2,), 20, 30, "unknown", None),
             get(1, "k", "3", 40, 50), (1, "incr", "k", (1,), 60, 70, "ok", 4))
    assert lin(h).verdict == OK
    # and an unknown cas only applies where it matches
    h = hist(put(1, "k", "a", 0, 10),
             (2, "cas", "k", ("b", "c"), 20, 30, "unknown", None),
             get(1, "k", "c", 40, 50))
    assert lin(h).verdict == VIOLATION


def test_in_flight_ops_count_as_unknown():
    h = History()
    h.record(1, "put", "k", ("a",), invoke_ns=0, complete_ns=10, outcome="ok")
    op = h.invoke(2, "put", "k", ("b",))  # never resolved
    h.record(1, "get", "k", (), invoke_ns=op.invoke_ns + 5,
             complete_ns=op.invoke_ns + 10, outcome="ok", value="b")
    assert lin(h).verdict == OK


def test_unknown_initial_total_is_fixed_by_the_first_observation():
    h = hist(read_total(1, 100, 0, 10), add(1, 5, 0, 105, 20, 30))
    assert check_linearizable(h, initial_total=None).verdict == OK
    assert check_linearizable(h).verdict == VIOLATION  # from 0 it is not
    h = hist(read_total(1, 100, 0, 10), add(1, 5, 0, 106, 20, 30))
    assert check_linearizable(h, initial_total=None).verdict == VIOLATION


def test_initial_key_values_and_absent_keys():
    h = hist(get(1, "k", "seed", 0, 10), get(1, "j", None, 0, 10),
             get(1, "j", "", 20, 30))
    assert check_linearizable(h, initial_kv={"k": "seed"}).verdict == OK
    assert check_linearizable(h).verdict == VIOLATION


def test_retries_of_one_request_are_one_op():
    h = History()
    h.record(1, "add", None, (5, 3), invoke_ns=0, complete_ns=10,
             outcome="unknown", client_id=7, sequence=1)
    h.record(1, "add", None, (5, 3), invoke_ns=20, complete_ns=30,
             outcome="ok", value={"sum": 8, "total": 8}, client_id=7,
             sequence=1)
    h.record(1, "total", None, (), invoke_ns=40, complete_ns=50, outcome="ok",
             value=8)
    r = check_linearizable(h)
    assert r.verdict == OK and r.figures["merged_retries"] == 1
    assert check_no_duplicates(h, 8).verdict == OK
    h.record(1, "add", None, (1, 1), invoke_ns=60, complete_ns=70,
             outcome="ok", value=2, client_id=7, sequence=1)
    with pytest.raises(ValueError, match="used by different requests"):
        check_linearizable(h)


# ---------------------------------------------------------------------------
# The time limit


def test_time_limit_gives_an_honest_unknown():
    # 24 concurrent puts, then two reads that disagree with nothing written in
    # between: not linearizable, but proving it means trying every order.
    ops = [put(i, "k", f"v{i}", 0, 1000) for i in range(24)]
    ops += [get(99, "k", "v0", 2000, 2010), get(99, "k", "v1", 2020, 2030)]
    h = hist(*ops)
    t = time.monotonic()
    r = check_linearizable(h, time_limit=0.3)
    assert time.monotonic() - t < 3
    assert r.verdict == UNKNOWN, r
    assert "timed out after 0.3 s on key 'k'" in r.message


# ---------------------------------------------------------------------------
# Election safety


def test_two_leaders_in_one_term_is_caught():
    obs = [Observation(0, 1, 1, "LEADER"), Observation(5, 2, 1, "FOLLOWER", 1),
           Observation(10, 2, 2, "LEADER"), Observation(20, 3, 2, "LEADER")]
    r = check_election_safety(obs)
    assert r.verdict == VIOLATION
    assert "term 2" in r.message and "node 2" in r.message and "node 3" in r.message
    assert r.details["terms"] == {2: [2, 3]}


def test_one_leader_per_term_passes():
    h = History()
    h.observe(1, 1, "LEADER")
    h.observe(2, 1, "FOLLOWER", leader=1)
    h.observe(2, 2, "LEADER")
    h.observe_status({"node_id": 1, "current_term": 2, "state": "FOLLOWER",
                      "current_leader": 2})
    h.observe(2, 2, "leader")  # the same leader seen again
    r = check_election_safety(h)
    assert r.verdict == OK
    assert r.figures["leader_changes"] == 1 and r.figures["max_term"] == 2


def test_follower_views_count_only_when_asked():
    obs = [Observation(0, 1, 3, "LEADER"), Observation(1, 2, 3, "FOLLOWER", 4)]
    assert check_election_safety(obs).verdict == OK
    r = check_election_safety(obs, include_follower_views=True)
    assert r.verdict == VIOLATION and "reported by node 2" in r.message


def test_no_observations_is_unknown():
    assert check_election_safety([]).verdict == UNKNOWN


# ---------------------------------------------------------------------------
# No acknowledged write lost


def test_lost_acknowledged_write_is_caught():
    h = hist(put(1, "k", "a", 0, 10), put(2, "k", "b", 20, 30))
    r = check_no_lost_writes(h, final_kv={"k": "a"})
    assert r.verdict == VIOLATION
    assert "op#1 c2 put('k', 'b')" in r.message and r.figures["lost_keys"] == 1


def test_final_value_from_concurrent_or_unknown_write_passes():
    h = hist(put(1, "k", "a", 0, 30), put(2, "k", "b", 20, 40),
             put(3, "k", "c", 50, 60, "unknown"), put(3, "j", "x", 0, 5),
             (1, "del", "j", (), 10, 20, "ok", True))
    assert check_no_lost_writes(h, final_kv={"k": "a", "j": None}).verdict == OK
    assert check_no_lost_writes(h, final_kv={"k": "b"}).verdict == OK
    assert check_no_lost_writes(h, final_kv={"k": "c"}).verdict == OK
    r = check_no_lost_writes(h, final_kv={"k": "never"})
    assert r.verdict == VIOLATION and "never written" in r.message
    r = check_no_lost_writes(h, final_kv={"j": "x"})
    assert r.verdict == VIOLATION  # the acked del came after


def test_lost_add_is_caught_and_bounds_hold():
    h = hist(add(1, 1, 0, 1, 0, 10), add(2, 2, 0, 3, 20, 30),
             add(3, 4, 0, None, 40, 50, "unknown"))
    assert check_no_lost_writes(h, final_total=3).verdict == OK
    assert check_no_lost_writes(h, final_total=7).verdict == OK
    r = check_no_lost_writes(h, final_total=2)
    assert r.verdict == VIOLATION and "1 lost" in r.message
    r = check_no_lost_writes(h, final_total=9)
    assert r.verdict == VIOLATION and "applied twice" in r.message
    assert check_no_lost_writes(h).verdict == UNKNOWN


# ---------------------------------------------------------------------------
# No request applied twice


def test_duplicated_apply_is_caught_with_powers_of_two():
    h = hist(*[add(1, 1 << i, 0, None, 10 * i, 10 * i + 5) for i in range(4)],
             add(2, 16, 0, None, 100, 110, "unknown"))
    assert check_no_duplicates(h, 15).verdict == OK
    r = check_no_duplicates(h, 31)
    assert r.verdict == OK and r.figures["unknown_applied"] == 1
    r = check_no_duplicates(h, 15 + 4)          # add 4 applied twice
    assert r.verdict == VIOLATION and r.figures["method"] == "greedy"
    r = check_no_duplicates(h, 15 - 2)          # add 2 lost
    assert r.verdict == VIOLATION and "op#1" in r.message
    h.record(3, "add", None, (0, 0), invoke_ns=200 * MS, complete_ns=201 * MS,
             outcome="ok", value={"sum": 0, "total": 15})
    assert check_no_duplicates(h, 15 + 4).figures["method"] == "greedy"


def test_duplicated_apply_is_caught_with_a_dynamic_program():
    # addends 3, 5, 7 acked; 4, 6, 6 unknown: not superincreasing
    h = hist(add(1, 3, 0, None, 0, 1), add(1, 5, 0, None, 2, 3),
             add(1, 7, 0, None, 4, 5), add(2, 4, 0, None, 0, 1, "unknown"),
             add(2, 6, 0, None, 2, 3, "unknown"),
             add(3, 6, 0, None, 2, 3, "unknown"))
    for applied in (0, 4, 6, 10, 12, 16):
        r = check_no_duplicates(h, 15 + applied)
        assert r.verdict == OK and r.figures["method"] in ("bitset", "trivial")
    for bad in (15 + 1, 15 + 3, 15 + 8, 15 + 17, 15 + 30, 14):
        assert check_no_duplicates(h, bad).verdict == VIOLATION, bad
    # negative addends take the set-of-sums route
    h.record(4, "add", None, (-9, 0), invoke_ns=0, complete_ns=1,
             outcome="unknown")
    assert check_no_duplicates(h, 15 + 10 - 9).figures["method"] == "sums"
    assert check_no_duplicates(h, 15 + 10 - 9).verdict == OK
    assert check_no_duplicates(h, 15 + 2).verdict == VIOLATION


def test_subset_sum_too_large_is_unknown():
    rnd = random.Random(1)
    h = hist(*[add(1, rnd.randint(-10**9, 10**9), 0, None, i, i + 1, "unknown")
               for i in range(40)])
    r = check_no_duplicates(h, 12345, max_states=10_000)
    assert r.verdict == UNKNOWN and "powers" in r.message


# ---------------------------------------------------------------------------
# Convergence


class _Status:  # what a StatusResponse looks like to the checker
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_divergent_digests_are_caught():
    r = check_convergence([
        {"node_id": 1, "applied_index": 40, "state_digest": "aa"},
        {"node_id": 2, "applied_index": 40, "state_digest": "bb"},
        {"node_id": 3, "applied_index": 40, "state_digest": "aa"}])
    assert r.verdict == VIOLATION and "diverged" in r.message
    assert r.figures["diverged"] is True


def test_convergence():
    sts = [_Status(node_id=i, applied_index=40, state_digest="aa", total=8)
           for i in (1, 2, 3)]
    r = check_convergence(sts)
    assert r.verdict == OK and r.figures["applied_index"] == 40
    sts[2].applied_index = 38
    r = check_convergence(sts)
    assert r.verdict == VIOLATION and "not converged" in r.message
    assert check_convergence([]).verdict == UNKNOWN


# ---------------------------------------------------------------------------
# The recorder and its file format


def test_recorder_is_thread_safe_and_round_trips(tmp_path):
    h = History(meta={"seed": 42})

    def client(c):
        for i in range(200):
            op = h.invoke(c, "put", f"k{c}", (f"v{i}",), client_id=c + 1,
                          sequence=i + 1, node=1)
            [h.ok, h.fail, h.unknown][i % 3](op, *(["OK"] if i % 3 == 0 else ["why"]))
            g = h.invoke(c, "get", f"k{c}")
            h.unknown(g, "timeout")
        h.observe(c, 1, "FOLLOWER", leader=9)

    ts = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in ts)
    ops = h.ops
    assert [o.id for o in ops] == list(range(1600))
    s = h.summary()
    assert s["attempted"] == 1600 and s["by_kind"]["put"]["ok"] == 268
    with pytest.raises(RuntimeError, match="already resolved"):
        h.ok(ops[0], "OK")
    path = tmp_path / "h.jsonl"
    h.save(str(path))
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 1600 + 4
    assert json.loads(lines[0])["meta"] == {"seed": 42}
    h2 = History.load(str(path))
    assert [o.to_dict() for o in h2.ops] == [o.to_dict() for o in ops]
    assert [o.to_dict() for o in h2.observations] == \
        [o.to_dict() for o in h.observations]
    assert check_linearizable(h2).verdict == OK


def test_bad_ops_are_refused_with_clear_errors():
    h = History()
    with pytest.raises(ValueError, match="unknown op kind"):
        h.invoke(1, "append", "k", ("x",))
    with pytest.raises(ValueError, match="takes 2 argument"):
        h.invoke(1, "cas", "k", ("x",))
    with pytest.raises(ValueError, match="takes no key"):
        h.invoke(1, "add", "k", (1, 2))
    with pytest.raises(ValueError, match="must be an integer"):
        h.invoke(1, "incr", "k", ("two",))
    op = h.invoke(1, "cas", "k", ("a", "b"))
    with pytest.raises(ValueError, match="cas: the result"):
        h.ok(op, "maybe")


def test_replay_from_the_command_line(tmp_path, capsys):
    h = hist(put(1, "k", "a", 0, 10), put(2, "k", "b", 20, 30),
             get(1, "k", "a", 40, 50), final_kv={"k": "b"})
    h.observe(1, 1, "LEADER", time_ns=0)
    path = tmp_path / "h.jsonl"
    h.save(str(path))
    assert main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "linearizable: violation" in out and "no_lost_writes: ok" in out


def test_check_all_runs_what_the_inputs_allow():
    h = hist(add(1, 1, 0, 1, 0, 10), add(2, 2, 0, 3, 20, 30))
    h.observe(1, 1, "LEADER")
    res = check_all(h, final_total=3, statuses=[
        {"node_id": 1, "applied_index": 2, "state_digest": "x"}])
    assert set(res) == {"linearizable", "election_safety", "no_lost_writes",
                        "no_duplicates", "convergence"}
    assert all(r.passed for r in res.values()), res


# ---------------------------------------------------------------------------
# Properties over simulated histories


def _simulated(rnd, sequential=False, unknown=True):
    kinds = [("put", "get", "cas", "del"), ("put", "get", "incr", "cas"),
             ("add", "total"), ("put", "get", "cas", "incr", "del", "add",
                                "total")][rnd.randrange(4)]
    return simulate(rnd, clients=rnd.randint(1, 5), n_ops=rnd.randint(1, 60),
                    keys=rnd.randint(1, 3), kinds=kinds,
                    unknown_pct=rnd.choice([0, 10, 30]) if unknown else 0,
                    fail_pct=rnd.choice([0, 10]), sequential=sequential,
                    slow_pct=rnd.choice([0, 20]),
                    report_total_pct=rnd.choice([100, 50]),
                    add_range=rnd.choice([(1, 1000), (-5, 20)]))


def prop_simulated_histories_are_linearizable(rnd):
    h, kv, total, applied = _simulated(rnd)
    r = check_linearizable(h, time_limit=10)
    assert r.verdict == OK, r.message
    final_kv = {k: kv.get(k) for k in {o.key for o in h.ops if o.key}}
    assert check_no_lost_writes(h, final_kv=final_kv,
                                final_total=total).verdict == OK
    if any(o.kind == "add" for o in h.ops):
        assert check_no_duplicates(h, total).verdict in (OK, UNKNOWN)


def prop_injected_stale_read_is_caught(rnd):
    h, *_ = _simulated(rnd, sequential=True, unknown=False)
    # Replay the sequential, all-definite history to know each read's
    # earlier values; pick a read and make it return a stale one.
    ops = [o for o in h.ops if o.outcome == "ok"]
    state: dict = {}
    history_of: dict = {}
    total, totals = 0, [0]
    candidates = []
    for o in ops:
        if o.kind == "get":
            stale = [v for v in history_of.get(o.key, [None])
                     if v != o.value and not (v is None and o.value == "")]
            if stale:
                candidates.append((o, stale))
        elif o.kind == "total":
            stale = [t for t in totals if t != o.value]
            if stale:
                candidates.append((o, stale))
        elif o.kind == "add":
            total += o.delta
            totals.append(total)
        else:
            if o.kind == "put":
                state[o.key] = o.args[0]
            elif o.kind == "cas" and o.value:
                state[o.key] = o.args[1]
            elif o.kind == "incr":
                state[o.key] = str(o.value)
            elif o.kind == "del":
                state.pop(o.key, None)
            history_of.setdefault(o.key, [None]).append(state.get(o.key))
    if not candidates:
        # nothing read a changed value: add a write and a stale read of it
        end = max((o.complete_ns for o in h.ops if o.complete_ns), default=0)
        h.record(0, "put", "s", ("old",), invoke_ns=end + 1, complete_ns=end + 2)
        h.record(0, "put", "s", ("new",), invoke_ns=end + 3, complete_ns=end + 4)
        h.record(0, "get", "s", (), invoke_ns=end + 5, complete_ns=end + 6,
                 value="old")
    else:
        o, stale = candidates[rnd.randrange(len(candidates))]
        o.value = stale[rnd.randrange(len(stale))]
    r = check_linearizable(h, time_limit=10)
    assert r.verdict == VIOLATION, r.message


def prop_agrees_with_brute_force(rnd):
    h, *_ = simulate(rnd, clients=rnd.randint(1, 4), n_ops=rnd.randint(1, 8),
                     keys=rnd.randint(1, 2), unknown_pct=rnd.choice([0, 30]),
                     slow_pct=30, add_range=(-3, 3))
    oks = [o for o in h.ops if o.outcome == "ok" and o.kind != "put"]
    if oks and rnd.random() < 0.6:  # perturb one answer
        o = oks[rnd.randrange(len(oks))]
        if o.kind == "get":
            o.value = rnd.choice([None, "v0", "v1", "v2", "1"])
        elif o.kind in ("cas", "del"):
            o.value = not o.value
        elif o.kind == "incr":
            o.value += 1
        elif o.kind == "add" and o.value["total"] is not None:
            o.value = {"sum": o.value["sum"], "total": o.value["total"] + 1}
        elif o.kind == "total":
            o.value -= 1
    r = check_linearizable(h, time_limit=10)
    assert r.verdict == (OK if brute_linearizable(h.ops) else VIOLATION), \
        r.message


PROPS = [prop_simulated_histories_are_linearizable,
         prop_injected_stale_read_is_caught, prop_agrees_with_brute_force]

if given is not None:
    @pytest.mark.parametrize("prop", PROPS, ids=lambda p: p.__name__[5:])
    @settings(max_examples=150, deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(rnd=st.randoms(use_true_random=False))
    def test_property(prop, rnd):
        prop(rnd)
else:  # pragma: no cover - without hypothesis: the same properties, seeded
    @pytest.mark.parametrize("seed", range(150))
    @pytest.mark.parametrize("prop", PROPS, ids=lambda p: p.__name__[5:])
    def test_property(prop, seed):
        prop(random.Random(seed))


# ---------------------------------------------------------------------------
# Speed: LIN-01's size


def test_ten_thousand_ops_check_in_seconds():
    rnd = random.Random(2024)
    h, kv, total, _ = simulate(rnd, clients=5, n_ops=10_000, keys=20,
                               unknown_pct=3, fail_pct=2, slow_pct=2,
                               add_range=(1, 1 << 20))
    t = time.monotonic()
    r = check_linearizable(h, time_limit=60)
    spent = time.monotonic() - t
    assert r.verdict == OK, r.message
    assert spent < 10, f"10,000 ops took {spent:.1f} s"
    # and a stale read hidden in it is found as fast: a read in the middle
    # returns a value overwritten by acknowledged puts before it started
    ops = h.ops
    for g in ops[5000:]:
        if g.kind != "get" or g.outcome != "ok":
            continue
        puts = [o for o in ops if o.kind == "put" and o.key == g.key
                and o.outcome == "ok" and o.complete_ns < g.invoke_ns]
        stale = [p for p in puts if p.args[0] != g.value and any(
            q.invoke_ns > p.complete_ns for q in puts)]
        if stale:
            g.value = stale[0].args[0]
            break
    else:
        pytest.fail("no read to make stale")
    t = time.monotonic()
    assert check_linearizable(h, time_limit=60).verdict == VIOLATION
    assert time.monotonic() - t < 10
