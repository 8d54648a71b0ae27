"""Pods and nodes: instance choice, start-up times, NodePool limits, spot reclaims, consolidation, cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifier_plan.cluster import Cluster, Pod
from classifier_plan.prices import load_prices

from .conftest import make_setup

SPOT_POOL = {
    "spot": {"enabled": True},
    # a Knative cluster that enables what spot placement needs (a stock Knative refuses it)
    "knative": {"features": ["kubernetes.podspec-affinity", "kubernetes.podspec-tolerations"]},
    "resources": {"requests": {"cpu": "4", "memory": "8Gi"}},  # a whole 4 cores: more than an xlarge offers
    "karpenter": {
        "nodePool": {
            "enabled": True,
            "instanceFamilies": ["g6"],
            "limits": {"cpu": "512", "memory": "2048Gi", "nvidia.com/gpu": "2"},
        },
        "ec2NodeClass": {"enabled": True, "role": "r", "discoveryTag": "d"},
    },
}


class Recorder:
    """A listener that drains pods at once."""

    def __init__(self) -> None:
        self.ready: list[tuple[int, float]] = []
        self.cluster: Cluster | None = None

    def on_ready(self, pod: Pod, now: float) -> None:
        self.ready.append((pod.id, now))

    def on_drain(self, pod: Pod, now: float) -> None:
        assert self.cluster is not None
        self.cluster.pod_drained(pod, now)

    def on_kill(self, pod: Pod, now: float) -> None:
        self.on_drain(pod, now)


def cluster_for(setup) -> tuple[Cluster, Recorder]:
    rec = Recorder()
    c = Cluster(setup, rec)
    rec.cluster = c
    return c, rec


def run_until(c: Cluster, until: float) -> None:
    t = 0.0
    while t < until:
        t += 1.0
        c.advance(t)


def test_cpu_request_of_4_does_not_fit_an_xlarge(tmp_path: Path, helm: str, profile) -> None:
    s = make_setup(tmp_path, helm, SPOT_POOL, profile)
    # g6.xlarge has 4 vCPU: 4 - 0.08 kube-reserved - 0.2 daemonsets < the pod's 4 cores.
    cpu, _ = load_prices().instances["g6.xlarge"].allocatable(0.2, 0.5)
    assert cpu == pytest.approx(3.72)
    assert "g6.xlarge" not in s.candidates
    assert s.candidates == ["g6.2xlarge", "g6.4xlarge", "g6.12xlarge"]  # the NodePool's g6, L4 like the profile
    assert s.capacity_type == "spot"


def test_the_default_cpu_request_fits_an_xlarge(tmp_path: Path, helm: str, profile) -> None:
    values = {k: v for k, v in SPOT_POOL.items() if k != "resources"}  # the chart's default 3500m
    s = make_setup(tmp_path, helm, values, profile)
    assert s.candidates[0] == "g6.xlarge"


def test_start_up_chain_on_a_new_node(tmp_path: Path, helm: str, profile) -> None:
    s = make_setup(tmp_path, helm, SPOT_POOL, profile, seed=1, spot_interruptions_per_node_hour=0.0)
    c, rec = cluster_for(s)
    c.set_replicas(0.0, 1)
    run_until(c, 400)
    assert len(rec.ready) == 1
    a = s.assumptions
    # batch window (1 s idle) + launch + scheduling + image pull + storage init (100 MB at 100 MB/s + 4 s)
    # + cold start 10 s + probes (uniform within 5 s + 5 s) + endpoint propagation 2 s; 1-s steps.
    low = 1 + a.node_launch_s + a.scheduling_s + a.image_pull_s + (4 + 1.0) + 10 + 2
    assert low <= rec.ready[0][1] <= low + 10 + 3
    assert c.nodes_by_capacity() == (1, 0)


def test_nodepool_gpu_limit_leaves_pods_pending(tmp_path: Path, helm: str, profile) -> None:
    s = make_setup(tmp_path, helm, SPOT_POOL, profile, spot_interruptions_per_node_hour=0.0)
    c, rec = cluster_for(s)
    c.set_replicas(0.0, 3)
    run_until(c, 600)
    assert len(rec.ready) == 2  # limit nvidia.com/gpu: 2 -> two single-GPU nodes
    assert c.count("pending") == 1
    assert sum(c.nodes_by_capacity()) == 2


def test_spot_reclaim_replaces_pod_and_node(tmp_path: Path, helm: str, profile) -> None:
    s = make_setup(tmp_path, helm, SPOT_POOL, profile, spot_interruptions_per_node_hour=3600.0 / 500, seed=2)
    c, rec = cluster_for(s)
    c.bootstrap(1)
    run_until(c, 3000)
    assert c.interruptions >= 2
    assert c.count("ready") + c.count("starting") + c.count("pending") == 1  # always one replica wanted
    assert len(rec.ready) >= 2  # the bootstrap pod, then replacements became ready


def test_empty_nodes_consolidated_after_consolidate_after(tmp_path: Path, helm: str, profile) -> None:
    s = make_setup(tmp_path, helm, SPOT_POOL, profile, spot_interruptions_per_node_hour=0.0)
    c, _ = cluster_for(s)
    c.bootstrap(2)
    c.set_replicas(10.0, 1)
    run_until(c, 10 + 300 - 2)
    assert sum(c.nodes_by_capacity()) == 2  # consolidateAfter 5m not reached
    run_until(c, 10 + 300 + 2)
    assert sum(c.nodes_by_capacity()) == 1


def test_cost_is_price_times_hours(tmp_path: Path, helm: str, profile) -> None:
    s = make_setup(tmp_path, helm, SPOT_POOL, profile, spot_interruptions_per_node_hour=0.0)
    c, _ = cluster_for(s)
    c.bootstrap(2)
    run_until(c, 3600)
    it = load_prices().instances["g6.2xlarge"]
    assert c.cost_usd["typical"] == pytest.approx(2 * it.on_demand_usd_per_h * (1 - it.spot_discount.typical))
    assert c.cost_usd["low"] == pytest.approx(2 * it.on_demand_usd_per_h * (1 - it.spot_discount.low))
    assert c.node_seconds == {"g6.2xlarge/spot": pytest.approx(7200.0)}


def test_scale_down_removes_pending_before_ready(tmp_path: Path, helm: str, profile) -> None:
    s = make_setup(tmp_path, helm, SPOT_POOL, profile, spot_interruptions_per_node_hour=0.0)
    c, _ = cluster_for(s)
    c.bootstrap(1)
    c.set_replicas(1.0, 2)
    assert c.count("pending") == 1
    c.set_replicas(2.0, 1)
    assert (c.count("pending"), c.count("ready")) == (0, 1)
