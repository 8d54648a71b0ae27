"""One canary analysis run: preflight, wait for the canary, then step, check and decide until it is
promoted, rolled back or stopped.

Nothing is patched before every input is known good (the flags, the Prometheus URL, the
InferenceService and its canary). Every patch is generated from the object as it is at that moment,
checked against the CRD, and sent only if the canary and its traffic are still what the tool left; a
SIGINT or SIGTERM stops the run between checks and leaves the traffic where it is.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from classifier_canary.analysis import Action, Analysis, Decision
from classifier_canary.config import CanaryConfig
from classifier_canary.errors import (
    EXIT_PROMOTED,
    EXIT_ROLLED_BACK,
    ApplyFailed,
    CanaryError,
    CanaryInputError,
    ChangedUnderneath,
    NoCanary,
)
from classifier_canary.guard import PatchGuard
from classifier_canary.isvc import CanaryState, promote_patch, read_state, rollback_patch, traffic_patch
from classifier_canary.log import DecisionLog
from classifier_canary.prometheus import PrometheusClient, measure
from classifier_canary.reference import ReferenceResult, ReferenceSet, revision_urls, run_reference
from classifier_canary.store import Store


class StopFlag:
    """Set by SIGINT/SIGTERM; waits end early when it is set."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    def request(self, signum: int, _frame: Any = None) -> None:
        self.signum = signum
        self.event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; ``True`` if a stop was requested."""
        return self.event.wait(max(0.0, seconds))

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "stop request"

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)


class Runner:
    """Runs one analysis against ``store`` with ``prom``; :meth:`run` returns the exit code."""

    def __init__(
        self,
        cfg: CanaryConfig,
        store: Store,
        prom: PrometheusClient,
        log: DecisionLog,
        stop: StopFlag,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg, self.store, self.prom, self.log, self.stop, self.clock = cfg, store, prom, log, stop, clock
        self.analysis = Analysis(cfg)
        self.guard: PatchGuard | None = None
        self.state: CanaryState | None = None
        self.expected_traffic: int | None = None
        self.traffic_note = "traffic unchanged: the tool sent no patch"
        self.reference: ReferenceSet | None = None

    # ------------------------------------------------------------------ preflight

    def preflight(self) -> CanaryState:
        """Check Prometheus, read the InferenceService, choose the CRD (raises :class:`CanaryInputError`)."""
        version = self.prom.check()
        if self.cfg.reference_dir is not None:
            self.reference = ReferenceSet.load(self.cfg.reference_dir, self.cfg.reference_labels)
        state = read_state(self.store.get())
        self.guard = self._guard()
        self.log.emit(
            "start",
            f"{state.mode} mode, {self.store.description}; Prometheus {self.prom.url} ({version}); "
            f"CRD {self.guard.source}; steps {','.join(map(str, self.cfg.steps))} every "
            f"{self.cfg.step_interval_seconds:g}s; max error {self.cfg.max_error_ratio:g}, shed "
            f"{self.cfg.max_shed_ratio:g}, 4xx +{self.cfg.max_client_error_increase:g}, "
            f"p95 x{self.cfg.max_p95_ratio:g} and +{self.cfg.min_p95_increase_seconds:g}s, min "
            f"{self.cfg.min_requests} requests, {self.cfg.max_failed_checks} {self.cfg.count_failed_checks} failed "
            f"checks roll back; monitoring outage: {self.cfg.on_monitoring_outage}; {self._quality_text()}"
            + (" [dry run]" if self.cfg.dry_run else ""),
            mode=state.mode,
            store=self.store.description,
            prometheus=self.prom.url,
            prometheus_version=version,
            crd=self.guard.source,
            config=self.cfg.model_dump(mode="json"),
        )
        return state

    def _quality_text(self) -> str:
        c = self.cfg
        live = (
            "answers: not compared"
            if c.skip_live_quality
            else f"answers: class mix JS <= {c.max_class_divergence:g}, confidence ±{c.max_confidence_shift:g}, "
            f"min {c.min_quality_predictions} images"
        )
        if self.reference is None:
            return f"{live}; no reference set"
        labelled = f", {len(self.reference.expected)} labelled" if self.reference.expected else ""
        return (
            f"{live}; reference set {c.reference_dir} ({len(self.reference.images)} images{labelled}): agreement >= "
            f"{c.min_reference_agreement:g}, accuracy drop <= {c.max_reference_accuracy_drop:g}"
        )

    def _run_reference(self, state: CanaryState, tries: int = 1) -> ReferenceResult | None:
        """The reference set sent to both revisions (``None`` without one); a revision that did not answer
        is asked again up to ``tries`` times, ``poll_interval`` apart."""
        if self.reference is None:
            return None
        stable_url, canary_url = revision_urls(self.cfg, state.mode, state.stable_revision, state.canary_revision)
        for attempt in range(tries):
            result = run_reference(self.reference, stable_url, canary_url, self.cfg.reference_timeout_seconds)
            if result.problem is None or attempt == tries - 1 or self.stop.wait(self.cfg.poll_interval_seconds):
                return result
            self.log.emit("wait", f"reference set: {result.problem}; asking again", detail=result.problem)
        return result

    def _guard(self) -> PatchGuard:
        if self.cfg.crd == "shipped":
            return PatchGuard(None)
        crd, why = self.store.cluster_crd()
        if crd is None and self.cfg.crd == "cluster":
            raise CanaryInputError(f"--crd cluster: cannot read the cluster's CRD: {why}")
        guard = PatchGuard(crd)
        if crd is None and why:
            guard.source += f"; the cluster's is not readable: {why}"
        return guard

    def wait_ready(self, state: CanaryState) -> CanaryState | None:
        """Wait until the canary is ready; ``None`` if it never was. Raises :class:`NoCanary`."""
        deadline = self.clock() + self.cfg.ready_timeout_seconds
        shown = None
        while True:
            if state.reconciled and not state.has_canary:
                raise NoCanary(f"{self.log.isvc} has no canary to analyse: {state.detail}")
            if state.reconciled and state.ready:
                return state
            left = deadline - self.clock()
            if left <= 0:
                if state.reconciled and state.has_canary:
                    return None
                raise NoCanary(f"{self.log.isvc}: no canary after {self.cfg.ready_timeout_seconds:g}s: {state.detail}")
            if state.detail != shown:
                shown = state.detail
                self.log.emit("wait", f"canary not ready yet: {state.detail}", detail=state.detail)
            if self.stop.wait(min(self.cfg.poll_interval_seconds, left)):
                return state
            state = read_state(self.store.get())

    # ------------------------------------------------------------------ patches

    def _apply(self, make: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
        """Generate a patch from the live object, check it, send it; returns it (``None``: nothing to change)."""
        try:
            obj = self.store.get()
        except CanaryInputError as e:
            raise ApplyFailed(str(e)) from None
        now = read_state(obj)
        assert self.state is not None
        if now.identity != self.state.identity:
            raise ChangedUnderneath(f"the canary changed during the analysis ({now.detail}); nothing more is sent")
        if self.expected_traffic is not None and now.traffic_percent != self.expected_traffic:
            raise ChangedUnderneath(
                f"canary traffic is {now.traffic_percent}% but the tool last set {self.expected_traffic}%: "
                "somebody else changed it; nothing more is sent"
            )
        patch = make(obj)
        if patch == {"spec": {}}:
            return None  # already so: nothing to send
        assert self.guard is not None
        self.guard.check(obj, patch)
        self.store.patch(patch, obj.get("metadata", {}).get("resourceVersion"))
        return patch

    def _do(self, action: Action) -> dict[str, Any] | None:
        if action.kind == "traffic":
            percent = action.percent or 0
            patch = self._apply(lambda o: traffic_patch(o, percent))
            self.expected_traffic = percent
            self.traffic_note = f"canary traffic left at {percent}%"
            return patch
        if action.kind == "promote":
            return self._apply(promote_patch)
        if action.kind == "rollback":
            return self._apply(rollback_patch)
        return None

    # ------------------------------------------------------------------ the run

    def run(self) -> int:
        """The whole analysis; returns the exit code (0 promoted, 1 rolled back, 128+signal stopped)."""
        state = self.preflight()
        self.state = state
        ready = self.wait_ready(state)
        if self.stop.event.is_set():
            return self._stopped()
        if ready is None:
            decision = self.analysis.canary_not_ready(
                f"canary not ready after {self.cfg.ready_timeout_seconds:g}s: {state.detail}"
            )
            return self._finish(decision, self._do(decision.action))
        self.state = ready
        try:
            return self._steps(ready)
        except ChangedUnderneath:
            raise  # its message says what the traffic is now
        except CanaryInputError as e:
            raise ApplyFailed(f"{e}; {self.traffic_note}") from None
        except CanaryError as e:
            raise type(e)(f"{e}; {self.traffic_note}") from None

    def _steps(self, state: CanaryState) -> int:
        steps = len(self.cfg.steps)
        reference = self._run_reference(state, tries=3)  # nothing is at stake yet: a slow start is not a verdict
        if self.stop.event.is_set():
            return self._stopped()
        if reference is not None:
            refused = self.analysis.before_traffic(reference)
            if refused is not None:
                return self._finish(refused, self._do(refused.action))
        first = self.analysis.start()
        patch = self._do(first)
        self.log.traffic(1, steps, first.percent or 0, patch, not self.cfg.dry_run)
        window_start = last_check = self.clock()
        while True:
            if self.stop.wait(last_check + self.cfg.step_interval_seconds - self.clock()):
                return self._stopped()
            at = self.clock()
            m = measure(
                self.prom,
                self.cfg.namespace,
                self.cfg.isvc,
                state.canary_revision,
                state.stable_revision,
                at - window_start,
                at,
                answers=not self.cfg.skip_live_quality,
                knative=state.mode == "Knative",
            )
            if not m.problem and self.reference is not None:
                m = dataclasses.replace(m, reference=self._run_reference(state))
            if self.stop.event.is_set():
                return self._stopped()
            decision = self.analysis.judge(m)
            try:
                patch = self._do(decision.action)
            except CanaryError:
                self.log.check(decision, steps, self.cfg.max_failed_checks, None, False, failed=True)
                raise
            last_check = self.clock()
            if decision.new_window:
                window_start = last_check
            if decision.action.kind in ("promote", "rollback"):
                return self._finish(decision, patch)
            self.log.check(decision, steps, self.cfg.max_failed_checks, patch, not self.cfg.dry_run)

    def _finish(self, decision: Decision, patch: dict[str, Any] | None) -> int:
        steps = len(self.cfg.steps)
        self.log.check(decision, steps, self.cfg.max_failed_checks, patch, not self.cfg.dry_run)
        promoted = decision.action.kind == "promote"
        outcome = "promoted" if promoted else "rolled-back"
        code = EXIT_PROMOTED if promoted else EXIT_ROLLED_BACK
        what = (
            f"canary {self.state.canary_revision if self.state else ''} is the stable revision now"
            if promoted
            else "every request goes to the stable revision"
        )
        if self.cfg.dry_run:
            what += " (dry run: nothing was changed)"
        by = "+".join(decision.decided_by)
        self.log.emit(
            "result",
            f"{outcome}: {what}" + (f" (decided by {by})" if by else "") + f" (exit {code})",
            outcome=outcome,
            exit_code=code,
            dry_run=self.cfg.dry_run,
            decided_by=list(decision.decided_by),
        )
        return code

    def _stopped(self) -> int:
        step = self.analysis.index + 1
        obj_hint = ""
        if self.expected_traffic is not None:
            try:
                obj_hint = json.dumps(rollback_patch(self.store.get()), separators=(",", ":"))
            except CanaryError:
                pass
        text = f"stopped by {self.stop.name} at step {step}/{len(self.cfg.steps)}: {self.traffic_note}"
        if obj_hint:
            text += (
                f"; roll back with: kubectl -n {self.cfg.namespace} patch inferenceservice {self.cfg.isvc} "
                f"--type merge -p '{obj_hint}'"
            )
        self.log.emit(
            "stopped",
            text,
            signal=self.stop.name,
            step=step,
            traffic_percent=self.expected_traffic,
            rollback_patch=json.loads(obj_hint) if obj_hint else None,
        )
        code = self.stop.exit_code
        self.log.emit("result", f"stopped (exit {code})", outcome="stopped", exit_code=code)
        return code
