"""The benchmarks' verdict on quiet: whose CPU counts as the benchmark's own (benchmarks/quietness.py)."""

from __future__ import annotations

from benchmarks.quietness import _ours

# pid -> (comm, ppid, own ticks, ticks of reaped children)
PROCS = {
    1: ("init", 0, 5, 0),
    2: ("kthreadd", 0, 0, 0),
    30: ("kworker/0:1", 2, 7, 0),
    100: ("python", 1, 50, 20),  # the benchmark
    101: ("python", 100, 40, 0),  # its relay subprocess
    102: ("nats-server", 101, 9, 0),  # a private server it started
    200: ("postgres", 1, 30, 0),  # a shared service
    300: ("bash", 1, 3, 900),  # another program: a test run it reaped
    301: ("python3", 300, 80, 0),
}


def test_the_benchmark_tree_services_and_kernel_threads_are_ours_and_nothing_else() -> None:
    ours = _ours(PROCS, root=100)
    assert ours == {100: 70, 101: 40, 102: 9, 200: 30, 2: 0, 30: 7}
    assert 300 not in ours and 301 not in ours and 1 not in ours


def test_a_root_that_is_gone_leaves_only_services_and_kernel_threads() -> None:
    assert set(_ours(PROCS, root=999)) == {200, 2, 30, 102}
