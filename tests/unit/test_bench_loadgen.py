"""The load generator of `bench throughput` (bench/loadgen.py): its workers never share an
agent, so two in-flight requests never wait for each other's conversation (across memproxy
processes, a shared conversation means polling its lease)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bench.loadgen import agent_of


@given(agents=st.integers(1, 500), concurrency=st.integers(1, 128), turns=st.integers(1, 60))
def test_workers_never_share_an_agent(agents: int, concurrency: int, turns: int) -> None:
    served = [{agent_of(w, k, agents, concurrency) for k in range(turns)}
              for w in range(concurrency)]
    for w, mine in enumerate(served):
        for other in served[w + 1:]:
            assert not mine & other
        assert all(a >= 0 for a in mine)
        if agents >= concurrency:
            assert all(a < agents for a in mine)


def test_each_worker_rotates_over_its_own_agents() -> None:
    # 200 agents over 32 connections: 6 each (192 used), in turn
    assert [agent_of(3, k, 200, 32) for k in range(8)] == [3, 35, 67, 99, 131, 163, 3, 35]
    # the old rule (index % 200) gave worker 8 agent 0 on its 7th request, worker 0's own
    assert 0 not in {agent_of(8, k, 200, 32) for k in range(100)}
