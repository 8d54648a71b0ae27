"""Inference engines behind one interface; which one serves and why (choice), how it is built (registry).

* :mod:`~predictor.engine.base`: the :class:`Engine` interface every backend implements.
* :mod:`~predictor.engine.registry`: the one list of backends, what each runs on which device, how each
  is built (the settings, ``--help`` and the chart schema read their names from it).
* :mod:`~predictor.engine.choice`: what is served and why: ``auto`` settings → a :class:`ServingChoice`,
  the precision check of an ``auto`` reduced precision (before ready), build and load. Read it first.
* :mod:`~predictor.engine.precision_check`: does reduced precision keep this model's answers.
* :mod:`~predictor.engine.faults`: out-of-memory split-and-cap, a broken device latched.
"""

from predictor.engine.base import Engine, EngineInfo
from predictor.engine.choice import CPU_CANDIDATES, LoadedEngine, ServingChoice, build_engine, choose, load_engine

__all__ = [
    "CPU_CANDIDATES",
    "Engine",
    "EngineInfo",
    "LoadedEngine",
    "ServingChoice",
    "build_engine",
    "choose",
    "load_engine",
]
