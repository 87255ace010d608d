"""Drive a launch's studies round by round: each round, every study still asking hands over a
batch, and all batches train together (trials of different losses share one stack's matmuls);
their outcomes go to each study's ledger, which records and tells them on the finisher thread
while the next round trains. Any exception or signal takes one path: :meth:`Scheduler.stop`.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Executor
from typing import Any, Dict, List

from ..runner import run_trials
from . import faults
from .finalize import finalize_study, import_report_modules
from .trial_entry import TrialEntry
from .options import SweeperOptions
from .shutdown import ShutdownGuard
from .study_session import SessionState, StudySession

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, sessions: List[StudySession], options: SweeperOptions, finisher: Executor,
                 guard: ShutdownGuard):
        self.sessions, self.options = sessions, options
        self.finisher, self.guard = finisher, guard
        self._poll = max(1.0, options.heartbeat_interval / 2)
        self._report_modules_asked = False

    def run(self) -> List[Dict[str, Any]]:
        """Every study's summary, in order, once all are finalized."""
        try:
            while True:
                round_ = self._ask_round()
                if round_:
                    self._train(round_)
                elif all(s.state in (SessionState.DRAINING, SessionState.DONE) for s in self.sessions):
                    break
                else:
                    time.sleep(self._poll)  # only other workers' trials are open: wait for them
            return [s.summary.result() for s in self.sessions]
        except BaseException as error:
            self.stop(error)
            raise

    def _ask_round(self) -> Dict[StudySession, List[TrialEntry]]:
        round_ = {}
        for session in self.sessions:
            if session.state in (SessionState.DRAINING, SessionState.DONE):
                continue
            entries = session.next_batch()
            if entries:
                round_[session] = entries
            elif session.state == SessionState.DRAINING:
                session.summary = self.finisher.submit(self._finalize, session)
        return round_

    def _train(self, round_: Dict[StudySession, List[TrialEntry]]) -> None:
        """One call of the trainer per tracker (studies with the same tracking config share one)."""
        faults.check("train")
        if not self._report_modules_asked:  # on the finisher while this first round trains
            self.finisher.submit(import_report_modules)
            self._report_modules_asked = True
        by_tracker: Dict[int, List[StudySession]] = {}
        for session in round_:
            by_tracker.setdefault(id(session.tracker), []).append(session)
        for members in by_tracker.values():
            for session in members:
                session.stats.training_starts()
            union = [e.spec for s in members for e in round_[s]]
            outcomes = iter(run_trials(union, members[0].tracker, report_intermediate=self.options.pruner != "none",
                                       should_prune=lambda t: t.should_prune(), executor=self.finisher,
                                       diagnostic_plots=None))
            for session in members:
                session.trained(round_[session], [next(outcomes) for _ in round_[session]])

    def _finalize(self, session: StudySession) -> Dict[str, Any]:
        """On the finisher, after the study's last tell: its summary, with this launch's figures."""
        session.close()
        session.reconciled.result()  # done (queued before this job): a repair that failed fails the study
        wall = time.perf_counter() - session.stats.started
        summary = finalize_study(session)
        summary["this_launch"] = session.stats.as_dict(session.batch_size, wall,
                                                       time.perf_counter() - session.stats.started - wall)
        session.state = SessionState.DONE
        return summary

    def stop(self, error: BaseException) -> None:
        """The one interrupt path (a signal, an error, a study over its failure rate): every
        study records what trained and aborts what is open; runs once, signals ignored."""
        self.guard.begin_cleanup(error)
        if not isinstance(error, KeyboardInterrupt):
            log.error("stopping the sweep: %s: %s", type(error).__name__, error)
        # One wait for all studies' recordings (they share the finisher): what is still open
        # then is aborted well within the shutdown timeout.
        deadline = time.monotonic() + max(1.0, self.options.shutdown_timeout / 2)
        for session in self.sessions:
            try:
                session.stop(error, deadline)
            except BaseException:  # noqa: BLE001 -- the other studies still get their turn
                log.exception("could not stop study %s cleanly; the next launch repairs it", session.name)
