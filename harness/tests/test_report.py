"""The run report's figures (pytest_craft/report.py) on hand-made histories:
unavailability windows, latency by phase, the summary table."""

from __future__ import annotations

from pytest_craft.history import History
from pytest_craft.report import latency_by_phase, summary_lines, unavailability

MS = 1_000_000


def ops(*spans):
    """spans: (t0_ms, t1_ms, outcome)"""
    h = History()
    for t0, t1, out in spans:
        h.record(1, "put", "k", ("v",), invoke_ns=t0 * MS, complete_ns=t1 * MS,
                 outcome=out, value=None)
    return h.ops


def test_unavailability_spans_last_ack_before_to_first_ack_after():
    h = ops((0, 100, "ok"), (100, 200, "ok"), (200, 900, "fail"),
            (900, 1700, "ok"), (1700, 1800, "ok"))
    # A fault at 0.5 s: last ack 0.2 s, first ack after it 1.7 s.
    assert unavailability(h, [(0.5, "kill the leader")]) == [("kill the leader", 1.5)]


def test_unavailability_without_an_ack_after_the_fault_is_none():
    h = ops((0, 100, "ok"), (100, 5000, "fail"))
    assert unavailability(h, [(0.5, "isolate 1")]) == [("isolate 1", None)]


def test_a_fault_before_any_ack_has_no_window():
    h = ops((600, 700, "ok"))
    assert unavailability(h, [(0.5, "kill 1")]) == []


def test_latency_by_phase_splits_at_the_first_fault_and_the_final_heal():
    h = ops((0, 10, "ok"), (20, 40, "ok"), (600, 1600, "ok"), (700, 720, "fail"),
            (3000, 3005, "ok"))
    lat = latency_by_phase(h, [(0.5, "kill 1"), (1.0, "kill 2")], final_t=2.0)
    assert lat["before_faults"] == {"ops": 2, "p50_ms": 20.0, "p99_ms": 20.0}
    assert lat["during_faults"] == {"ops": 1, "p50_ms": 1000.0, "p99_ms": 1000.0}
    assert lat["after_heal"] == {"ops": 1, "p50_ms": 5.0, "p99_ms": 5.0}


def test_summary_table_has_a_line_per_scenario_with_its_figures():
    rec = {"id": "FAIL-01", "outcome": "passed", "seconds": 1.5,
           "ops": {"attempted": 15, "ok": 14, "fail": 1, "unknown": 0,
                   "lost": 0, "duplicated": 0},
           "linearizable": {"verdict": "ok"}, "election_s": [0.48],
           "unavailable_s": [["kill 1", 0.5], ["kill 2", None]],
           "recovery_s": 0.12, "peer_calls_per_op": 10.7}
    head, line = list(summary_lines([rec]))
    assert head.split()[:3] == ["scenario", "result", "s"]
    words = line.split()
    assert words[:11] == ["FAIL-01", "passed", "1.5", "15", "14", "1", "0", "0",
                          "0", "ok", "0.50"]
    assert words[11:] == ["0.12", "10.7", "0.48"]
