"""One pod's service times, from the capacity profile's pod model and the predictor's settings: the work
before the batcher (parsing, decoding, a jitter that grows with the pod's load, the event loop where it has
its own core), the forward pass per batch size (at most the latency-capped batch), and the response; and
the most images the pod admits within its queue-wait budget."""

from __future__ import annotations

import random

from classifier_plan.capacity import POST_SHARE
from classifier_plan.setup import SimSetup


class ServiceModel:
    """The timings every pod of a run shares; draws the pre-inference jitter from ``rng``."""

    def __init__(self, setup: SimSetup, mean_images: float, rng: random.Random) -> None:
        pm, st = setup.pod_model, setup.plan.settings
        self.pm, self.rng = pm, rng
        self.jitter_s = min(pm.overhead_jitter_ms, pm.overhead_ms) / 1000.0
        self.jitter_u_s = pm.jitter_per_utilization_ms / 1000.0
        self.batch_cap = setup.batch_cap  # the server's latency cap: a pass within an eighth of the budget
        self.cap_img = max(1e-9, setup.capacity(mean_images))
        # Admission by expected wait: the images admitted ahead plus the newcomer's, at the saturated drain
        # rate (what the server measures while its queue is full), within the queue-wait budget.
        self.wait_limit_images = self.cap_img * st.queue_wait_budget_s
        self.pre_s = (pm.overhead_ms - self.jitter_s * 1000.0) * (1 - POST_SHARE) / 1000.0
        self.post_s = (pm.overhead_ms - self.jitter_s * 1000.0) * POST_SHARE / 1000.0
        self.delay_s = st.max_batch_delay_ms / 1000.0
        self.batch_s = [pm.batch_ms(n) / 1000.0 for n in range(st.max_batch_size + 1)]
        # The event loop is a serial stage of its own only where the pod's CPU is not shared with inference.
        has_frontend = not pm.cpu_shared and pm.frontend_ms_per_request > 0
        self.frontend_s = pm.frontend_ms_per_request / 1000.0 if has_frontend else 0.0

    def pre_inference_s(self, images: int, rate_img_per_s: float) -> float:
        """Parsing and decoding ``images`` on a pod admitting ``rate_img_per_s``, its jitter drawn."""
        pm = self.pm
        pre = self.pre_s + (images - 1) * pm.decode_ms_per_image / 1000.0 / max(1, pm.decode_threads)
        theta = self.jitter_s + self.jitter_u_s * min(1.0, rate_img_per_s / self.cap_img)
        if theta > 0:
            pre += self.rng.expovariate(1.0 / theta)
        return pre
