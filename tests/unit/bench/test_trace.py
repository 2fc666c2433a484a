"""``bench trace``'s analysis (bench/trace.py): one commit's segments matched across the three
nodes' events by log index, the committing follower being the one whose ack came first."""

from __future__ import annotations

from saltext_raft.bench import trace


def _commit(index, t0, f_save_us, f2_delay_us):
    """Events of one commit at ``t0`` (ns): leader n1, followers n2 (acks first) and n3."""
    us = 1000
    ev = [
        (t0, "n1", "loop", "submit", -1),
        (t0 + 50 * us, "n1", "loop", "ready", index),
        (t0 + 60 * us, "n1", "loop", "send_append", index),
        (t0 + 61 * us, "n1", "loop", "send_append", index),
        (t0 + 100 * us, "n1", "store", "save_start", index),
        (t0 + 400 * us, "n1", "store", "save_end", index),
        (t0 + 260 * us, "n2", "loop", "recv_append", index),
        (t0 + 275 * us, "n2", "loop", "stepped_append", index),
        (t0 + 300 * us, "n2", "store", "save_start", index),
        (t0 + (300 + f_save_us) * us, "n2", "store", "save_end", index),
        (t0 + (400 + f_save_us) * us, "n2", "loop", "send_resp", index),
        (t0 + (600 + f_save_us) * us, "n1", "loop", "recv_resp", index),
        (t0 + (630 + f_save_us) * us, "n1", "loop", "stepped_resp", index),
        (t0 + (630 + f_save_us + f2_delay_us) * us, "n1", "loop", "stepped_resp", index),
        (t0 + (600 + f_save_us + f2_delay_us) * us, "n1", "loop", "recv_resp", index),
        (t0 + (700 + f_save_us) * us, "n1", "loop", "apply", index),
        (t0 + 270 * us, "n3", "loop", "recv_append", index),
        (t0 + 320 * us, "n3", "store", "save_start", index),
        (t0 + (320 + f_save_us + f2_delay_us) * us, "n3", "store", "save_end", index),
        (t0 + (420 + f_save_us + f2_delay_us) * us, "n3", "loop", "send_resp", index),
        (t0 + 350 * us, "n2", "store", "fdatasync", f_save_us * us),
    ]
    return ev


def test_segments_of_each_commit_are_taken_from_the_leader_and_the_first_follower_to_ack():
    events = sorted(_commit(5, 10**9, 500, 300) + _commit(6, 2 * 10**9, 700, 300))
    out = trace.analyse(events, "n1")
    assert out["commits"] == 2
    seg = out["segments_us"]
    assert seg["hop 1: leader send -> follower receive"]["p50_us"] == 200.0
    assert seg["follower: receive -> save starts"]["p50_us"] == 40.0
    assert seg["follower, of which: stepping the append"]["p50_us"] == 15.0
    assert seg["follower, of which: stepped -> save starts"]["p50_us"] == 25.0
    assert seg["leader, of which: stepping the ack"]["p50_us"] == 30.0  # the first ack's
    assert seg["leader, of which: stepped -> apply"]["p50_us"] == 70.0
    assert seg["follower: save (write + fdatasync)"]["p50_us"] == 600.0  # median of 500, 700
    assert seg["hop 2: follower send -> leader receive"]["p50_us"] == 200.0
    assert seg["leader, in parallel: own save"]["p50_us"] == 300.0
    assert seg["total: submit -> apply"]["p50_us"] == 1300.0
    assert out["syncs_us"]["fdatasync"]["n"] == 2


def test_a_commit_without_its_apply_is_left_out():
    events = [e for e in _commit(5, 10**9, 500, 300) if e[3] != "apply"]
    assert trace.analyse(sorted(events), "n1")["commits"] == 0
