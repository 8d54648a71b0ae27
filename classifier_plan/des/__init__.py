"""Request-level engine: a discrete-event simulation (simpy) of every request through the pods.

Each pod is the predictor as measured: admission against ``max_queue_images`` and the queue-wait budget
(503 when full, or when what is ahead would not drain within ``max_queue_wait_ms``), the pre-inference
overhead (parsing, decoding), the batcher (a batch starts when the latency-capped batch of images waits
(``max_batch_size``, or fewer where a pass would take over an eighth of the budget) or
``max_batch_delay_ms`` after its first image, one batch at a time on the inference thread,
items past ``request_timeout_ms`` dropped with 504), the forward time of the batch from the capacity
profile, then the response. Requests reach pods round-robin; while no pod is ready they wait at Knative's
activator or the KEDA HTTP add-on's interceptor, which pass them on as :mod:`classifier_plan.holder` says
(``holding``); with neither (Standard mode) they are refused (503).

Modules: ``engine`` (:class:`DesEngine`: arrivals, routing, the control loop), ``holding`` (held
requests), ``pod`` (one pod's data plane), ``service`` (the per-pod service times), ``tally`` (requests
and what became of them).
"""

from classifier_plan.des.engine import DesEngine

__all__ = ["DesEngine"]
