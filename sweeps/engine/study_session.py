"""One study of a launch: open it (identity, parent run, repairs), ask batches under the study
lock, hand their trials to the ledger, and say when it is done.

A session's states::

    ASKING ──budget used, own trials still recording──> DRAINING ──finalized──> DONE
      │  ^
      v  │ (others' trials finished or failed as stale)
    WAITING (only other workers' trials are open)
"""
from __future__ import annotations

import enum
import logging
import math
import time
from concurrent.futures import Executor, Future
from typing import List, Optional

import optuna
from optuna.trial import TrialState

from .. import adapter
from ..conditions import suggest_conditional, unconditional
from ..data import resolve_device
from ..runner import trial_params
from ..staged_asks import ask_staged
from ..trial import TrialSpec
from ..storage import Heartbeat, fail_stale_trials, running_trials, study_lock
from ..study import (BATCH_SEEDED_SAMPLERS, RESEEDED_SAMPLERS, askable, best_value, counted_trials, grid_size, make_sampler,
                     trial_seed)
from ..tracking import TAG_OVERRIDES, TAG_PARENT, TAG_ROLE, TAG_STUDY, TAG_TRIAL_ID, TAG_TRIAL_NUMBER, TAG_TRIAL_STATE
from . import faults
from .cells import Cell, CellComposer, cuda_fit, trial_run_name
from .ledger import TrialLedger
from .trial_entry import TrialEntry
from .trial_states import final_state_tags
from .options import SweeperOptions, SweepError
from .opening import OpenedStudy
from .progress import LaunchStats, Progress
from .shutdown import ShutdownGuard

log = logging.getLogger(__name__)


class SessionState(enum.Enum):
    ASKING = "asking"
    WAITING = "waiting for other workers"
    DRAINING = "recording its last trials"
    DONE = "done"


class StudySession:
    def __init__(self, opened: OpenedStudy, cell: Cell, options: SweeperOptions, composer: CellComposer,
                 finisher: Executor, guard: ShutdownGuard, position: int = 0):
        self.cell, self.options, self.composer = cell, options, composer
        self.finisher, self.guard = finisher, guard
        self.study, self.storage, self.tracker = opened.study, opened.storage, opened.tracker
        self.parent_id = opened.parent_id
        self.n_trials = options.n_trials
        if options.sampler == "grid":
            self.n_trials = min(self.n_trials, grid_size(cell.plan.search_space))
        self.seed = options.seed if options.seed is not None else int(cell.base.seed)
        device = resolve_device(cell.base.device.type)
        fit = cuda_fit(cell, device) if device.type == "cuda" and options.batch_size is None else None
        self.batch_size = options.batch_size_for(device.type, self.n_trials, fit)
        self.stats = LaunchStats()
        self.heartbeat = Heartbeat(self.storage, options.heartbeat_interval).start()
        self.ledger = TrialLedger(self.study, self.tracker, self.parent_id, self.heartbeat,
                                  self.stats, options.max_retries, options.better)
        done = sum(t.state.is_finished() for t in counted_trials(self.study.get_trials(deepcopy=False)))
        self.progress = Progress(self.name, self.n_trials, done, options.progress_bar, position)
        self.ledger.on_settled = lambda n: self.progress.update(n, lambda: best_value(self.study))
        log.info("study %s: %d/%d trials done", self.name, done, self.n_trials)
        self.state = SessionState.ASKING
        self.reconciled: Optional[Future] = None  # see _start_reconcile
        self.pending: List[Future] = []  # this study's recordings and tells on the finisher, in order
        self.summary: Optional[Future] = None
        self._waiting_since: Optional[float] = None
        # A trial is stale after grace_period s without a beat: checking every batch (a scan
        # of all trials) would make a long sweep quadratic; twice a heartbeat is soon enough.
        self._stale_every = max(1.0, options.heartbeat_interval / 2)
        self._stale_checked_at = -math.inf
        self._last_wait_log = 0.0

    @property
    def name(self) -> str:
        return self.study.study_name

    def _start_reconcile(self) -> Future:
        """Repair, on the finisher, the runs a crashed launch left RUNNING: queued before this
        launch's first run is created, so it (and MLflow's import) overlaps the first training."""
        if self.reconciled is None:
            self.reconciled = self.finisher.submit(self._reconcile)
        return self.reconciled

    def _reconcile(self) -> None:
        self.tracker.open_store()  # MLflow's import, outside the study lock: asks go on meanwhile
        with study_lock(self.storage, self.name):
            self.ledger.reconcile()

    # ------------------------------------------------------------------ asking
    def next_batch(self) -> List[TrialEntry]:
        """The next batch to train ([] when none now); moves the session's state."""
        if self.options.model_based:
            self.drain()  # model-based samplers learn from the tells: reproducible for a seed
        if self.stats.failure_rate_exceeded(self.n_trials, self.options.max_failure_rate):
            self.drain()
            self.tracker.end_run(self.parent_id, "FAILED")
            raise SweepError(f"{self.stats.failed} of {self.stats.trials_run} trials failed in study {self.name}, "
                             f"more than hydra.sweeper.max_failure_rate={self.options.max_failure_rate}; see "
                             f"the 'failure_reason' tag of the failed runs")
        entries = self._ask()
        self._start_reconcile()
        if entries:
            self.state, self._waiting_since = SessionState.ASKING, None
            return self._prepare(entries)
        others = [t for t in running_trials(self.study) if not self.ledger.admitted(adapter.trial_id(t))]
        if not others and not self.ledger.open_entries():
            self.state = SessionState.DRAINING
        elif others:
            self.state = SessionState.WAITING
            self._say_what_we_wait_for(others)
        else:  # our own trials are still being recorded: their tells may free budget, or end it
            self.drain()
            return self.next_batch()  # now none of ours is open: this asks, waits or drains
        return []

    def _ask(self) -> List[TrialEntry]:
        t0 = time.perf_counter()
        try:
            return self._ask_locked()
        finally:
            self.stats.add_bookkeeping(time.perf_counter() - t0, "ask")

    def _ask_locked(self) -> List[TrialEntry]:
        with self.guard.critical(), study_lock(self.storage, self.name):
            now = time.monotonic()
            if now - self._stale_checked_at >= self._stale_every:
                fail_stale_trials(self.study, self.storage, before_failing=self.ledger.before_stale_fail,
                                  after_failing=self.ledger.after_stale_fail)
                self._stale_checked_at = now
            trials = self.study.get_trials(deepcopy=False)
            k = min(self.batch_size, askable(trials, self.n_trials))
            # Under the lock no one else adds trials: re-queued (WAITING) ones are popped first,
            # by study.ask itself; the rest are new, asked in memory and written at once.
            popped = min(k, sum(t.state == TrialState.WAITING for t in trials))
            entries: List[TrialEntry] = []
            try:
                for _ in range(popped):
                    entries.append(self.ledger.admit(self._ask_one(self.study, len(trials)), requeued=True))
                if k > popped:
                    existing = self.study.get_trials(deepcopy=False) if popped else trials
                    if self.options.sampler in BATCH_SEEDED_SAMPLERS:
                        self.study.sampler = self._sampler(len(existing))
                    asked = ask_staged(self.study, existing, k - popped, self._ask_one)
                    entries += [self.ledger.admit(trial, requeued=False) for trial in asked]
            except BaseException as e:
                self.ledger.fail_unadmitted(len(trials), f"interrupted: ask failed: {type(e).__name__}")
                raise
            finally:
                self.heartbeat.add([entry.trial_id for entry in entries])  # one beat for the batch
            return entries

    def _ask_one(self, study: optuna.Study, number: int) -> optuna.Trial:
        """One trial asked of ``study`` (the real one, or the staged copy of a batch)."""
        faults.check("ask")
        plan = self.cell.plan
        space = unconditional(plan.search_space, plan.conditions)
        if self.options.sampler in RESEEDED_SAMPLERS and self.options.sampler not in BATCH_SEEDED_SAMPLERS:
            study.sampler = self._sampler(number)  # batch-seeded ones were set by the caller
        trial = study.ask(fixed_distributions=space)
        suggest_conditional(trial, plan.search_space, plan.conditions, self.cell.base)
        return trial

    def _sampler(self, number: int) -> optuna.samplers.BaseSampler:
        """The sampler seeded by (seed, trial number): a relaunch or a second worker never replays draws."""
        plan = self.cell.plan
        return make_sampler(self.options.sampler, trial_seed(self.seed, number),
                            unconditional(plan.search_space, plan.conditions), self.options.sampler_kwargs)

    def _prepare(self, entries: List[TrialEntry]) -> List[TrialEntry]:
        """Compose each trial's config and plan its MLflow run (created on the finisher while the
        batch trains); a trial whose config fails is told FAIL here. Returns those to train."""
        t0 = time.perf_counter()
        runnable = []
        for entry in entries:
            params = dict(entry.trial.params)
            cfg, error = None, None
            try:
                cfg = self.composer.trial_config(self.cell, params)
            except Exception as e:
                error = f"error: config: {e}"
            source = cfg if cfg is not None else self.cell.base
            spec = TrialSpec(cfg=cfg, number=entry.number, optuna_trial=entry.trial, record_tags=final_state_tags)
            run_params = trial_params(source, resolve_device(source.device.type))
            run_params.update({k: v for k, v in params.items() if k.split(".")[-1] not in run_params})
            overrides = " ".join(f"{k}={v}" for k, v in params.items())
            tags = {TAG_ROLE: "trial", TAG_PARENT: self.parent_id, TAG_STUDY: self.name,
                    TAG_TRIAL_NUMBER: entry.number, TAG_TRIAL_ID: entry.trial_id, TAG_TRIAL_STATE: "RUNNING",
                    TAG_OVERRIDES: f"{self.cell.overrides_tag} {overrides}".strip()}
            self.ledger.plan_run(entry, spec, trial_run_name(source.loss.name, entry.number, params), tags, run_params)
            if error is None:
                runnable.append(entry)
            else:
                with self.guard.critical():
                    self.ledger.fail_config(entry, error)
        self.stats.add_bookkeeping(time.perf_counter() - t0)
        if runnable:
            self.pending.append(self.finisher.submit(self.ledger.create_runs, runnable))
        return runnable

    def _say_what_we_wait_for(self, others) -> None:
        now = time.monotonic()
        self._waiting_since = self._waiting_since or now
        if now - self._last_wait_log >= 30 or self._last_wait_log == 0.0:
            self._last_wait_log = now
            numbers = ", ".join(str(t.number) for t in others[:10]) + (" ..." if len(others) > 10 else "")
            log.info("%s: budget used; waiting %.0f s so far for %d trials of other workers (%s); a trial whose "
                     "worker is gone is failed and re-queued after %d s without a heartbeat", self.name,
                     now - self._waiting_since, len(others), numbers, self.options.grace_seconds)

    # ------------------------------------------------------------------ after training
    def trained(self, entries: List[TrialEntry], outcomes) -> None:
        self.stats.trained_at = time.time()
        for entry, out in zip(entries, outcomes):
            with self.guard.critical():
                self.ledger.trained(entry, out)
        self.pending.append(self.finisher.submit(self.ledger.settle, list(entries)))

    def drain(self) -> None:
        """Wait for this study's finisher jobs (recordings and tells) to finish."""
        for future in self.pending:
            future.result()
        self.pending.clear()

    def stop(self, error: BaseException, deadline: Optional[float] = None) -> None:
        """The one interrupt path: record what trained, abort what is open, end the parent run.
        Runs once per session; safe whatever state the session is in. ``deadline`` (monotonic
        time): when to stop waiting for recordings, shared by all studies of the launch."""
        if deadline is None:
            deadline = time.monotonic() + max(1.0, self.options.shutdown_timeout / 2)
        if self.summary is not None:  # finished asking: its last trials and report are under way
            try:
                self.summary.result(timeout=max(0.0, deadline - time.monotonic()))
            except BaseException:  # finalizing failed or is late: the relaunch finalizes it
                self.tracker.end_run(self.parent_id, "KILLED")
                raise
            return
        try:
            for future in [f for f in (self.reconciled,) if f is not None] + self.pending:
                try:
                    future.result(timeout=max(0.0, deadline - time.monotonic()))
                except Exception:  # noqa: BLE001 -- that trial is aborted below
                    pass
            self.pending.clear()
        finally:
            self.ledger.abort_open()
            status = "FAILED" if isinstance(error, SweepError) and self.stats.failure_rate_exceeded(
                self.n_trials, self.options.max_failure_rate) else "KILLED"
            self.tracker.end_run(self.parent_id, status)
            self.close()

    def close(self) -> None:
        self.heartbeat.stop()
        self.progress.close()
