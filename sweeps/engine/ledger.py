"""The trial ledger: the only code that moves a trial through its states in Optuna and MLflow
together, so that both stores always agree.

A trial's life, as an explicit state machine (``Phase``)::

    ASKED ──create run──> RUN_CREATED ──trained──> TRAINED ──recorded──> RECORDED ──told──> TOLD
      │                        │                      │                      │
      └──── config error ──> TOLD (FAIL / FAILED)     │                      │
      └────────────── interrupt, error, tracking failure ────────────────────┴──> ABORTED

- TOLD: Optuna COMPLETE / PRUNED / FAIL, the MLflow run FINISHED / KILLED / FAILED to match.
- ABORTED: FAIL in Optuna with a reason that is not the params' fault (the budget does not count
  it), the run KILLED, and a WAITING copy re-queued so the next ask re-runs the same params.

Transitions happen under one lock; TOLD and ABORTED are final, so an abort that races a tell
(a second signal, an error on another thread) changes nothing twice.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Dict, List, Optional, Tuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from .. import adapter
from ..trial import NoRunError, TrialOutcome, TrialSpec
from ..storage import FAIL_STALE, Heartbeat
from ..study import ATTR_FAIL_REASON, ATTR_RUN_ID, FAIL_INTERRUPTED, requeue
from ..tracking import (TAG_PARENT, TAG_RETRY_OF, TAG_ROLE, TAG_STUDY, TAG_TRIAL_ID, TAG_TRIAL_NUMBER, Tracker,
                        mlflow_status)
from . import faults
from .progress import LaunchStats
from .trial_entry import FINAL, ALLOWED, Phase, TrialEntry
from .trial_states import final_state, run_status, state_tags

log = logging.getLogger(__name__)


class TrialLedger:
    """The trials of one study that this worker has asked, and those it repairs for others."""

    def __init__(self, study: optuna.Study, tracker: Tracker, parent_id: str, heartbeat: Heartbeat,
                 stats: LaunchStats, max_retries: int, better):
        self.study, self.tracker, self.parent_id = study, tracker, parent_id
        self.storage = adapter.storage_of(study)  # writes go through the study's own (cached) storage
        self.heartbeat, self.stats = heartbeat, stats
        self.max_retries = max_retries
        self._better = better
        self._lock = threading.RLock()
        self._open: Dict[int, TrialEntry] = {}  # trial id -> entry, until TOLD or ABORTED
        self._admitted: set = set()  # every trial id this launch admitted, open or not
        self.best: Optional[Tuple[TrialSpec, TrialOutcome]] = None  # this worker's best COMPLETE trial
        self.on_settled = lambda n: None  # progress callback: n trials reached a final state

    # ------------------------------------------------------------------ state changes
    def _move(self, entry: TrialEntry, to: Phase) -> None:
        if to not in ALLOWED[entry.phase]:
            raise RuntimeError(f"trial {entry.number}: {entry.phase.value} -> {to.value} is not a transition")
        entry.phase = to
        if to in FINAL:
            self._open.pop(entry.trial_id, None)
            self.heartbeat.remove([entry.trial_id])

    def admit(self, trial: optuna.Trial, requeued: bool) -> TrialEntry:
        """A trial just asked (call inside the shutdown guard's critical section; the caller
        beats for the batch it admits)."""
        entry = TrialEntry(trial, requeued)
        with self._lock:
            self._open[entry.trial_id] = entry
            self._admitted.add(entry.trial_id)
        return entry

    def open_entries(self) -> List[TrialEntry]:
        with self._lock:
            return list(self._open.values())

    def owns(self, trial_id: int) -> bool:
        with self._lock:
            return trial_id in self._open

    def admitted(self, trial_id: int) -> bool:
        """Whether this launch admitted the trial (a RUNNING trial read from the storage just
        before its tell landed is still ours, not another worker's)."""
        with self._lock:
            return trial_id in self._admitted

    def plan_run(self, entry: TrialEntry, spec: TrialSpec, name: str, tags: Dict[str, object],
                 params: Dict[str, object]) -> None:
        entry.spec, entry.run_name, entry.run_tags, entry.run_params = spec, name, tags, params

    def create_runs(self, entries: List[TrialEntry]) -> None:
        """ASKED -> RUN_CREATED (on the finisher thread, while the batch trains): the batch's
        runs in one write, then their links in Optuna in one more. A failure leaves entries
        ASKED: recording them then fails, and they are aborted and re-queued."""
        t0 = time.perf_counter()
        with self._lock:  # an entry aborted meanwhile has its run already; abort waits for the others
            entries = [e for e in entries if e.phase not in FINAL]
            for entry in entries:
                entry.creating = threading.Event()
        try:
            self._create_and_link(entries)
        finally:
            for entry in entries:
                entry.creating.set()
        self.stats.add_bookkeeping(time.perf_counter() - t0, "create_run")

    def _create_and_link(self, entries: List[TrialEntry]) -> None:
        planned = []
        for entry in entries:
            try:
                faults.check("create_run")
                planned.append((entry, self._run_tags(entry)))
            except Exception:
                log.exception("could not create the MLflow run of trial %d", entry.number)
        run_ids = self.tracker.create_runs([(e.run_name, tags, e.run_params) for e, tags in planned])
        for (entry, _), run_id in zip(planned, run_ids):
            entry.spec.run_id = run_id
        try:  # the links save a search; a run is found by its tags without them
            adapter.set_user_attrs(self.study, [(e.trial_id, ATTR_RUN_ID, e.run_id) for e, _ in planned if e.run_id])
        except Exception:
            log.exception("could not link trials %s to their MLflow runs", [e.number for e, _ in planned])
        with self._lock:
            for entry, _ in planned:
                if entry.phase == Phase.ASKED and entry.run_id is not None:
                    self._move(entry, Phase.RUN_CREATED)

    def _run_tags(self, entry: TrialEntry) -> Dict[str, object]:
        tags = dict(entry.run_tags or {})
        retry_of = (self.storage.get_trial_system_attrs(entry.trial_id).get("failed_trial")
                    if entry.requeued else None)
        if retry_of is not None:
            tags[TAG_RETRY_OF] = retry_of
        return tags

    def _create_run(self, entry: TrialEntry) -> None:
        entry.spec.run_id = self.tracker.create_run(entry.run_name, tags=self._run_tags(entry),
                                                    params=entry.run_params)
        entry.trial.set_user_attr(ATTR_RUN_ID, entry.spec.run_id)

    def fail_config(self, entry: TrialEntry, error: str) -> None:
        """ASKED -> TOLD: the trial's params make no valid config (FAIL / FAILED, counted)."""
        log.warning("trial %d: %s", entry.number, error)
        with self._lock:
            self._create_run(entry)
            entry.trial.set_user_attr(ATTR_FAIL_REASON, error)
            self._tell(entry.trial, state=TrialState.FAIL)
            self._close(entry.spec.run_id, "FAIL", error)
            self._move(entry, Phase.TOLD)
        self.stats.count(failed=True)
        self.on_settled(1)

    def trained(self, entry: TrialEntry, outcome: TrialOutcome) -> None:
        """-> TRAINED; recording was submitted to the finisher by the runner (``outcome.recorded``)."""
        with self._lock:
            if entry.phase in FINAL:
                return
            entry.outcome = outcome
            self._move(entry, Phase.TRAINED)

    def settle(self, entries: List[TrialEntry]) -> None:
        """TRAINED -> RECORDED -> TOLD for a trained batch, on the finisher thread, after its
        recording job: each trial told in Optuna, then all their MLflow runs ended in one
        write. A failure on a trial's way aborts that trial instead (FAIL, KILLED, re-queued)."""
        t0 = time.perf_counter()
        told = self._tell_batch([e for e in entries if self._recorded(e)])  # (entry, state); others aborted
        closing = {}
        for entry, state in told:
            try:
                faults.check("close_run")
                closing[entry.run_id] = entry
            except Exception:
                self._close_again(entry)
        try:
            self.tracker.end_runs({run_id: run_status(e.outcome) for run_id, e in closing.items()})
        except Exception:
            for entry in closing.values():
                self._close_again(entry)
        for entry, state in told:
            out = entry.outcome
            self.stats.count(failed=state == TrialState.FAIL, train=out.seconds, tracking=out.tracking_seconds)
            if state == TrialState.COMPLETE and out.weights is not None and (
                    self.best is None or self._better(out.val_acc, self.best[1].val_acc)):
                self.best = (entry.spec, out)
        self.stats.add_bookkeeping(time.perf_counter() - t0, "tell")
        if told:
            self.on_settled(len(told))

    def _close_again(self, entry: TrialEntry) -> None:
        """Told already: only ending its MLflow run failed. Once more (else a relaunch's reconcile)."""
        log.exception("could not end the MLflow run of trial %d; trying once more", entry.number)
        state, reason = final_state(entry.outcome)
        self._close_quietly(entry.run_id, state.name, reason)

    def _recorded(self, entry: TrialEntry) -> bool:
        """Whether the trial's recording is done and it may be told; aborts it when that failed."""
        try:
            if entry.outcome.recorded is not None:
                entry.outcome.recorded.result()  # raises if recording failed
            faults.check("record")
            if entry.run_id is None:
                raise NoRunError("it has no MLflow run (creating it failed)")
            return True
        except Exception as e:
            self._abort_untold(entry, e)
            return False

    def _abort_untold(self, entry: TrialEntry, error: Exception) -> None:
        # The run's creation logged its own traceback: a trial without a run gets one line.
        trace = None if isinstance(error, NoRunError) else (type(error), error, error.__traceback__)
        log.error("could not record trial %d: %s: %s", entry.number, type(error).__name__, error, exc_info=trace)
        self.abort(entry, f"tracking: could not record trial: {type(error).__name__}: {error}", self.max_retries)
        self.stats.count(failed=True, train=entry.outcome.seconds, tracking=entry.outcome.tracking_seconds)

    def _tell_batch(self, entries: List[TrialEntry]) -> List[Tuple[TrialEntry, TrialState]]:
        """RECORDED -> TOLD for the batch's recorded trials, their tells in one write
        (``adapter.tell_trials``); a trial whose tell fails is aborted instead."""
        decided = []  # (entry, state, reason)
        with self._lock:
            for entry in entries:
                if entry.phase in FINAL:
                    continue
                try:
                    self._move(entry, Phase.RECORDED)
                    faults.check("tell")
                    decided.append((entry, *final_state(entry.outcome)))
                except Exception as e:
                    self._abort_untold(entry, e)
            try:
                faults.check("tell_write")
                adapter.set_user_attrs(self.study, [(e.trial_id, ATTR_FAIL_REASON, reason)
                                                    for e, state, reason in decided if state == TrialState.FAIL])
                errors = adapter.tell_trials(self.study, [(e.trial, state, e.outcome.val_acc if state == TrialState.COMPLETE
                                                           else None) for e, state, _ in decided])
            except Exception as e:  # noqa: BLE001 -- the write failed as a whole: each trial is aborted
                errors = {entry.trial_id: e for entry, _, _ in decided}
            told = []
            for entry, state, reason in decided:
                if entry.trial_id in errors:
                    self._abort_untold(entry, errors[entry.trial_id])
                    continue
                self._move(entry, Phase.TOLD)
                if state == TrialState.FAIL:
                    log.warning("trial %d failed: %s", entry.number, reason)
                told.append((entry, state))
                try:
                    if state_tags(state.name, reason) != entry.outcome.logged_tags:  # a state it did not foresee
                        self.tracker.set_tags(entry.run_id, state_tags(state.name, reason))
                except Exception:  # noqa: BLE001 -- the close retags it
                    self._close_again(entry)
        return told

    def abort(self, entry: TrialEntry, reason: str, max_retries: Optional[int] = None) -> None:
        """Any open phase -> ABORTED: FAIL (not counted), run KILLED, re-queued. Idempotent.
        A run being created on the finisher is waited for (a second one would be its twin)."""
        while True:
            with self._lock:
                if entry.phase in FINAL:
                    return
                pending = entry.creating
                if pending is None or pending.is_set():
                    frozen = self.storage.get_trial(entry.trial_id)
                    run_id = entry.run_id or self.ensure_run(frozen)  # linked while the trial is still open
                    if frozen.state == TrialState.RUNNING:
                        self.storage.set_trial_user_attr(entry.trial_id, ATTR_FAIL_REASON, reason)
                        self._tell(entry.trial, state=TrialState.FAIL)
                        frozen = self.storage.get_trial(entry.trial_id)
                    self._move(entry, Phase.ABORTED)
                    break
            pending.wait()
        # Its Optuna state is final now; the rest repairs itself on a relaunch if it fails here.
        state_reason = frozen.user_attrs.get(ATTR_FAIL_REASON) if frozen.state == TrialState.FAIL else None
        self._close(run_id, frozen.state.name, state_reason)
        recorded = entry.outcome.recorded if entry.outcome is not None else None
        if recorded is not None and not recorded.cancel() and not recorded.done():
            # Being recorded right now: its metrics, and the final-state tags computed before
            # this abort, land after this close. Close the run again once they have.
            recorded.add_done_callback(lambda _: self._close_quietly(run_id, frozen.state.name, state_reason))
        if frozen.state == TrialState.FAIL and state_reason == reason:
            requeue(self.study, frozen, max_retries)

    def abort_open(self, reason: str = FAIL_INTERRUPTED) -> int:
        """Abort every open trial (interrupt or error); returns how many were open."""
        entries = self.open_entries()
        for entry in entries:
            try:
                self.abort(entry, reason, self.max_retries)
            except Exception:  # the others still get their turn; a relaunch repairs this one
                log.exception("could not mark trial %d as interrupted", entry.number)
        if entries:
            log.warning("%s: %d open trials marked FAIL/KILLED and re-queued; rerun the command to resume",
                        self.study.study_name, len(entries))
        return len(entries)

    # ------------------------------------------------------------------ both stores
    def _tell(self, trial, *args, **kwargs) -> None:
        self.study.tell(trial, *args, **kwargs)

    def _close(self, run_id: str, state: str, reason: Optional[str]) -> None:
        """End a trial's MLflow run to match its Optuna state."""
        self.tracker.set_tags(run_id, state_tags(state, reason))
        self.tracker.end_run(run_id, mlflow_status(state, reason))

    def _close_quietly(self, run_id: str, state: str, reason: Optional[str]) -> None:
        try:
            self._close(run_id, state, reason)
        except Exception:  # noqa: BLE001 -- a relaunch's reconcile ends it
            log.exception("could not end MLflow run %s", run_id)

    def ensure_run(self, trial: FrozenTrial) -> str:
        """The trial's MLflow run id, found by its tags or created bare if it never got one (its
        worker died between ask and training). Links it in Optuna while the trial is open."""
        run_id = trial.user_attrs.get(ATTR_RUN_ID)
        if run_id is not None:
            return run_id
        tid = adapter.trial_id(trial)
        found = self.tracker.search(f"tags.`{TAG_STUDY}` = '{self.study.study_name}' and "
                                    f"tags.`{TAG_TRIAL_ID}` = '{tid}' and tags.`{TAG_ROLE}` = 'trial'")
        if found:
            run_id = found[0].info.run_id
        else:
            run_id = self.tracker.create_run(f"trial-{trial.number:03d}", tags={
                TAG_ROLE: "trial", TAG_PARENT: self.parent_id, TAG_STUDY: self.study.study_name,
                TAG_TRIAL_NUMBER: trial.number, TAG_TRIAL_ID: tid})
        try:
            self.storage.set_trial_user_attr(tid, ATTR_RUN_ID, run_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # finished already: the run has the tags that link it
        return run_id

    # ------------------------------------------------------------------ others' trials, old launches
    def before_stale_fail(self, trial: FrozenTrial) -> None:
        self.ensure_run(trial)

    def after_stale_fail(self, trial: FrozenTrial) -> None:
        """A trial of a dead worker is FAIL now: close its run and re-queue it."""
        self._close(self.ensure_run(trial), "FAIL", FAIL_STALE)
        requeue(self.study, trial, self.max_retries)

    def fail_unadmitted(self, first_number: int, reason: str) -> None:
        """Trials this worker created but never admitted (an ask that raised half-way): FAIL."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number >= first_number and not self.owns(adapter.trial_id(t)):
                self.storage.set_trial_user_attr(adapter.trial_id(t), ATTR_FAIL_REASON, reason)
                self.storage.set_trial_state_values(adapter.trial_id(t), state=TrialState.FAIL)
                self._close(self.ensure_run(self.storage.get_trial(adapter.trial_id(t))), "FAIL", reason)

    def reconcile(self) -> None:
        """After a crash: finished Optuna trials whose MLflow run is still RUNNING get its state."""
        running = {r.info.run_id for r in self.tracker.search(
            f"tags.`{TAG_STUDY}` = '{self.study.study_name}' and attributes.status = 'RUNNING' "
            f"and tags.`{TAG_ROLE}` = 'trial'")}
        for t in self.study.get_trials(deepcopy=False):
            run_id = t.user_attrs.get(ATTR_RUN_ID)
            if t.state.is_finished() and run_id in running:
                self._close(run_id, t.state.name, t.user_attrs.get(ATTR_FAIL_REASON))
