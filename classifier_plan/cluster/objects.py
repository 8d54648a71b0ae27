"""The objects of the cluster model: pods, nodes, the index of pods by state, and the engine's listener."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

POD_STATES = ("pending", "starting", "ready", "draining")
"""The states a pod is counted in (``gone`` pods are in none)."""


class Listener(Protocol):
    """What an engine does when a pod starts or stops serving."""

    def on_ready(self, pod: Pod, now: float) -> None: ...

    def on_drain(self, pod: Pod, now: float) -> None: ...

    def on_kill(self, pod: Pod, now: float) -> None: ...


@dataclass(eq=False)
class Node:
    """One node: its type, capacity type, free resources and lifecycle."""

    id: int
    itype: str
    capacity_type: str
    launched: float
    ready_at: float
    free: list[float]  # gpus, cores, bytes
    state: str = "launching"  # launching | ready | draining | gone
    pods: set[Pod] = field(default_factory=set)
    image_at: float | None = None
    empty_since: float | None = None

    def fits(self, request: list[float]) -> bool:
        """Whether a pod of ``request`` (gpus, cores, bytes) can still be bound here."""
        return self.state in ("launching", "ready") and all(
            f >= r - 1e-9 for f, r in zip(self.free, request, strict=True)
        )

    def reserve(self, request: list[float]) -> None:
        self.free = [f - r for f, r in zip(self.free, request, strict=True)]

    def release(self, request: list[float]) -> None:
        self.free = [f + r for f, r in zip(self.free, request, strict=True)]


@dataclass(eq=False)
class Pod:
    """One predictor pod."""

    id: int
    created: float
    state: str = "pending"  # pending | starting | ready | draining | gone
    node: Node | None = None
    ready_at: float | None = None


class PodIndex:
    """The pods that exist, by state, in the order they entered it (what the counts and views read)."""

    def __init__(self) -> None:
        self.by_state: dict[str, dict[int, Pod]] = {k: {} for k in POD_STATES}

    def add(self, pod: Pod) -> None:
        """A new pod (pending)."""
        self.by_state[pod.state][pod.id] = pod

    def set(self, pod: Pod, state: str) -> None:
        """Move ``pod`` to ``state`` (``gone`` takes it out of the index)."""
        self.by_state.get(pod.state, {}).pop(pod.id, None)
        pod.state = state
        if state in self.by_state:
            self.by_state[state][pod.id] = pod

    def live(self) -> list[Pod]:
        """Pending, starting and ready pods (what the Deployment counts as its replicas)."""
        b = self.by_state
        return [*b["pending"].values(), *b["starting"].values(), *b["ready"].values()]

    def ready(self) -> list[Pod]:
        return list(self.by_state["ready"].values())

    def count(self, state: str) -> int:
        return len(self.by_state[state])
