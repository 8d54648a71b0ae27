"""Inference engines behind one interface; which one serves (policy), how it is built (registry) and loaded.

* :mod:`~predictor.engine.base`: the :class:`Engine` interface every backend implements.
* :mod:`~predictor.engine.registry`: the backends (torch, openvino, onnxruntime) and how each is built.
* :mod:`~predictor.engine.policy`: ``auto`` settings → a concrete :class:`EnginePlan`.
* :mod:`~predictor.engine.loader`: build, load, and the precision check of an ``auto`` reduced precision.
* :mod:`~predictor.engine.speed_check`: which backend (and OpenVINO hint) serves fastest here, measured.
* :mod:`~predictor.engine.faults`: out-of-memory split-and-cap, a broken device latched.
"""

from predictor.engine.base import Engine, EngineInfo
from predictor.engine.loader import LoadedEngine, PendingCheck, build_engine, create_engine, load_engine
from predictor.engine.policy import CPU_CANDIDATES, EnginePlan, resolve_plan

__all__ = [
    "CPU_CANDIDATES",
    "Engine",
    "EngineInfo",
    "EnginePlan",
    "LoadedEngine",
    "PendingCheck",
    "build_engine",
    "create_engine",
    "load_engine",
    "resolve_plan",
]
