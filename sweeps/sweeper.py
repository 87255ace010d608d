"""The sweep loop behind the `linear_optuna` Hydra sweeper: ask -> train (batched) -> tell.

For each outer-grid cell (e.g. loss=svm and loss=softmax) one Optuna study with the full
``n_trials``; each study has a parent MLflow run and one nested run per trial. The studies run
side by side: each round, every study asks ``batch_size`` trials under its study lock, and all
of them train together in this process (one stacked model where their configs allow), are told
to Optuna, and their MLflow runs ended in the matching state. Any number of workers may run the
same command against one storage: they share the studies and their budgets.
"""
from __future__ import annotations

import logging
import math
from concurrent.futures import Future, ThreadPoolExecutor
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import optuna
import torch
import yaml
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import TrialState

from .config import ConfigError, validate_config
from .data import load_data, matmul_dtype, resolve_device
from .runner import (
    COMPLETED,
    PRUNED,
    TrialOutcome,
    TrialSpec,
    run_trials,
    save_diagnostic_plots,
    trial_params,
)
from .search_space import SweepPlan, plan_sweep
from .study import (
    ATTR_FAIL_REASON,
    ATTR_RUN_ID,
    FAIL_INTERRUPTED,
    PRUNERS,
    SAMPLERS,
    Heartbeat,
    StaleTrialHandler,
    ask_new_trial,
    askable,
    check_sampler_space,
    counted_trials,
    fail_stale_trials,
    grid_size,
    make_pruner,
    make_sampler,
    make_storage,
    remaining_budget,
    study_lock,
)
from .tracking import (
    TAG_FAILURE,
    TAG_OVERRIDES,
    TAG_PARENT,
    TAG_RETRY_OF,
    TAG_ROLE,
    TAG_STORAGE,
    TAG_STUDY,
    TAG_TRIAL_ID,
    TAG_TRIAL_NUMBER,
    TAG_TRIAL_STATE,
    Tracker,
    mlflow_status,
    redact_url,
)

log = logging.getLogger(__name__)

GIL_SWITCH_INTERVAL = 1e-4  # seconds; see SweepLoop.sweep
optuna.logging.set_verbosity(optuna.logging.WARNING)

ATTR_PARENT_RUN = "mlflow_parent_run_id"
ATTR_EXPERIMENT = "mlflow_experiment_id"
ATTR_FINALIZED = "linear_sweeps_finalized_trials"
CPU_AUTO_BATCH, CUDA_AUTO_BATCH = 64, 256
# Samplers whose draws come from a private RNG; grid, qmc and cmaes derive theirs from the
# study (trial numbers, stored state) and keep one seeded instance.
RESEEDED_SAMPLERS = ("tpe", "random")
# Samplers whose suggestions depend on finished trials.
MODEL_BASED_SAMPLERS = ("tpe", "cmaes")


class SweepError(RuntimeError):
    """The sweep cannot go on (bad settings, too many failures)."""


class _StoppedWithOtherStudy(Exception):
    """Thrown into a study's loop when another study of the launch failed: it stops as on Ctrl-C."""


def _rule(ok: bool, name: str, rule: str, value) -> None:
    if not ok:
        raise ConfigError(f"hydra.sweeper.{name} must be {rule}, got {value!r}")


class SweepLoop:
    def __init__(self, sampler: str = "tpe", seed: Optional[int] = None, sampler_kwargs=None, pruner: str = "none",
                 pruner_kwargs=None, direction: str = "maximize", n_trials: int = 20,
                 storage: Optional[str] = "sqlite:///optuna.db", study_name: Optional[str] = None,
                 max_failure_rate: float = 0.5, batch_size: Optional[int] = None, max_retries: int = 1,
                 heartbeat_interval: int = 10, grace_period: Optional[int] = None,
                 progress_bar: Optional[bool] = None, params=None) -> None:
        _rule(sampler in SAMPLERS, "sampler", f"one of {list(SAMPLERS)}", sampler)
        _rule(pruner in PRUNERS, "pruner", f"one of {list(PRUNERS)}", pruner)
        _rule(direction in ("maximize", "minimize"), "direction", "'maximize' or 'minimize'", direction)
        _rule(isinstance(n_trials, int) and n_trials >= 1, "n_trials", "an integer >= 1", n_trials)
        _rule(0.0 <= max_failure_rate <= 1.0, "max_failure_rate", "in [0, 1]", max_failure_rate)
        _rule(batch_size is None or batch_size >= 1, "batch_size", "null (auto) or an integer >= 1", batch_size)
        _rule(max_retries >= 0, "max_retries", "an integer >= 0", max_retries)
        _rule(heartbeat_interval >= 1, "heartbeat_interval", "an integer >= 1 (seconds)", heartbeat_interval)
        self.sampler_name, self.seed = sampler, seed
        self.sampler_kwargs = dict(sampler_kwargs or {})
        self.pruner_name, self.pruner_kwargs = pruner, dict(pruner_kwargs or {})
        self.direction, self.n_trials = direction, n_trials
        self.storage_url, self.study_name = storage, study_name
        self.max_failure_rate, self.batch_size = max_failure_rate, batch_size
        self.max_retries = max_retries
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.progress_bar = progress_bar
        self.params = dict(params or {})
        self.config: Optional[DictConfig] = None
        self._trackers: Dict[str, Tracker] = {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.config_loader = hydra_context.config_loader
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    # ------------------------------------------------------------------ entry point
    def sweep(self, arguments: List[str]) -> List[Dict[str, Any]]:
        plan = plan_sweep(self.params, arguments)
        check_sampler_space(self.sampler_name, plan.search_space)
        # Compose and check every cell (and the corners of the search space) before any run.
        cells = [(cell, self._compose_cell(plan, cell)) for cell in plan.cells]
        # One background thread records trials, tells Optuna and writes study reports, in order,
        # while the main thread trains the next round.
        finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish-trials")
        # The training loop needs the GIL for a moment before each torch op; with Python's
        # default 5 ms switch interval a busy recording thread stalls it (measured: the trainer
        # 4.8x slower beside a busy Python thread; 2.1x, the CPU share, at 0.1 ms).
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        try:
            studies = [self._run_study(plan, cell, base, finisher, position=i) for i, (cell, base) in enumerate(cells)]
            summaries = [f.result() for f in self._run_side_by_side(studies, finisher)]
        finally:
            finisher.shutdown(wait=True)
            sys.setswitchinterval(switch_interval)
        self._write_results(summaries)
        return summaries

    def _run_side_by_side(self, studies: List, finisher: ThreadPoolExecutor) -> List[Future]:
        """Drive the studies' loops (generators from :meth:`_run_study`) round by round: every study
        still asking hands over its batch, and the batches train together (trials of different
        losses share one stack's matmuls: K = 100 runs about 20% faster than 2 x 50). Returns each
        study's summary future, in order."""
        summaries: List[Optional[Future]] = [None] * len(studies)
        batches: Dict[int, tuple] = {}  # study index -> (tracker, specs) of its current batch

        def advance(i: int, outcomes=None) -> None:
            try:
                batches[i] = studies[i].send(outcomes)
            except StopIteration as done:
                batches.pop(i, None)
                summaries[i] = done.value
            except BaseException:
                batches.pop(i, None)
                raise

        try:
            for i in range(len(studies)):
                advance(i)
            while batches:
                round_ = dict(batches)
                outcomes: Dict[int, list] = {}
                # One call per tracker (studies with the same tracking config share one).
                by_tracker: Dict[int, List[int]] = {}
                for i, (tracker, _) in round_.items():
                    by_tracker.setdefault(id(tracker), []).append(i)
                for members in by_tracker.values():
                    union = [spec for i in members for spec in round_[i][1]]
                    tracker = round_[members[0]][0]
                    results = iter(run_trials(union, tracker, report_intermediate=self.pruner_name != "none",
                                              should_prune=lambda t: t.should_prune(), executor=finisher,
                                              diagnostic_plots=None))
                    for i in members:
                        outcomes[i] = [next(results) for _ in round_[i][1]]
                errors = []
                for i in round_:
                    try:
                        advance(i, outcomes[i])
                    except BaseException as e:  # the other studies still record this round's trials
                        errors.append(e)
                if errors:
                    raise errors[0]
        except BaseException as error:
            # The studies still open stop as on Ctrl-C: their open trials FAIL (Optuna) / KILLED
            # (MLflow) and re-queued, their parent runs KILLED.
            stop = error if isinstance(error, KeyboardInterrupt) else _StoppedWithOtherStudy(str(error))
            for i in list(batches):
                try:
                    studies[i].throw(stop)
                except BaseException:  # noqa: BLE001 -- the first error is the one raised
                    pass
            raise
        return summaries  # type: ignore[return-value]

    # ------------------------------------------------------------------ configs
    def _compose(self, overrides: Sequence[str]) -> DictConfig:
        cfg = self.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.pop("hydra", None)
        return cfg

    def _compose_cell(self, plan: SweepPlan, cell: Sequence[str]) -> DictConfig:
        base = self._compose(list(plan.fixed) + list(cell))
        validate_config(base)
        for key, dist in plan.search_space.items():
            if OmegaConf.select(base, key, default="__missing__") == "__missing__":
                raise ConfigError(f"search space: {key} is not a key of the config "
                                  f"(known sections: {', '.join(base.keys())})")
            # The search space's corners must be valid values, or every trial would fail.
            for corner in _corners(dist):
                probe = base.copy()
                try:
                    OmegaConf.update(probe, key, corner)
                    validate_config(probe)
                except ConfigError as e:
                    raise ConfigError(f"search space {key} allows an invalid value: {e}") from None
                except Exception as e:
                    raise ConfigError(f"search space {key}: value {corner!r} does not fit the config: {e}") from None
        return base

    def _trial_config(self, base: DictConfig, plan: SweepPlan, cell, params: Dict[str, Any]) -> DictConfig:
        if any("." not in k for k in params):  # a top-level key or config-group choice: compose in full
            cfg = self._compose(list(plan.fixed) + list(cell) + [f"{k}={v}" for k, v in params.items()])
        else:
            cfg = base.copy()
            for k, v in params.items():
                OmegaConf.update(cfg, k, v)
        validate_config(cfg)
        return cfg

    def _tracker(self, base: DictConfig) -> Tracker:
        """One Tracker per tracking config: studies that share it train their batches together."""
        key = OmegaConf.to_yaml(base.tracking, resolve=True)
        if key not in self._trackers:
            self._trackers[key] = Tracker.from_config(base.tracking)
        return self._trackers[key]

    def _study_name(self, base: DictConfig, cell: Sequence[str]) -> str:
        name = self.study_name or base.tracking.experiment
        return f"{name}[{','.join(cell)}]" if cell else name

    def _auto_batch(self, base: DictConfig) -> int:
        if self.batch_size is not None:
            return self.batch_size
        if self.sampler_name in ("grid", "random", "qmc"):  # no feedback to wait for
            cap = CUDA_AUTO_BATCH if resolve_device(base.device.type).type == "cuda" else CPU_AUTO_BATCH
            return min(cap, self.n_trials)
        # Model-based samplers learn from finished trials: about four rounds per study.
        return max(1, min(CPU_AUTO_BATCH, math.ceil(self.n_trials / 4)))

    # ------------------------------------------------------------------ one study
    def _run_study(self, plan: SweepPlan, cell: Sequence[str], base: DictConfig, finisher: ThreadPoolExecutor,
                   position: int = 0):
        """One study's loop, as a generator: it yields ``(tracker, specs)`` for each batch to train
        and is sent the outcomes; it returns the future of its summary (finished on ``finisher``)."""
        device = resolve_device(base.device.type)
        # Decode the data (numpy/torch, mostly outside the GIL) while the stores open.
        loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-data")
        data_ready = loader.submit(load_data, base.dataset, base.model.dtype, device)
        loader.shutdown(wait=False)
        n_trials = self.n_trials
        if self.sampler_name == "grid":
            n_trials = min(n_trials, grid_size(plan.search_space))
        handler = StaleTrialHandler(self.max_retries)
        storage = make_storage(self.storage_url, self.heartbeat_interval, self.grace_period, handler)
        study_name = self._study_name(base, cell)
        seed = self.seed if self.seed is not None else int(base.seed)
        study = optuna.create_study(
            study_name=study_name, storage=storage, direction=self.direction, load_if_exists=True,
            sampler=make_sampler(self.sampler_name, seed, plan.search_space, self.sampler_kwargs),
            pruner=make_pruner(self.pruner_name, self.pruner_kwargs))
        tracker = self._tracker(base)
        tracker.experiment_id  # noqa: B018 -- creates the tracking store while the data loads
        data_ready.result()  # a data error ends the launch here, before any run exists
        handler.before_failing = lambda trial: self._ensure_run(tracker, study, trial)
        handler.on_failed = lambda trial, reason: self._close_run(tracker, study, trial, "FAIL", reason)
        overrides_tag = " ".join(list(plan.fixed) + list(cell))

        with study_lock(storage, study_name):
            parent_id = study.user_attrs.get(ATTR_PARENT_RUN)
            if parent_id is None:
                parent_id = tracker.create_run(study_name, tags={
                    TAG_ROLE: "study", TAG_STUDY: study_name, TAG_STORAGE: redact_url(self.storage_url),
                    TAG_OVERRIDES: overrides_tag, "sampler": self.sampler_name, "pruner": self.pruner_name,
                    "n_trials": n_trials, "search_space": yaml.safe_dump(
                        {k: str(v) for k, v in plan.search_space.items()}, default_flow_style=True).strip()},
                    params={"loss": base.loss.name, "dataset": base.dataset.name, "num_iters": base.model.num_iters,
                            "batch_size": base.model.batch_size, "n_trials": n_trials, "sampler": self.sampler_name})
                study.set_user_attr(ATTR_PARENT_RUN, parent_id)
                study.set_user_attr(ATTR_EXPERIMENT, tracker.experiment_id)
            else:
                self._reopen_parent(study, tracker, parent_id)
            self._reconcile(study, tracker)

        log.info("study %s: %d/%d trials done, storage %s, tracking %s (experiment %s)", study_name,
                 n_trials - remaining_budget(study, n_trials), n_trials, redact_url(self.storage_url),
                 redact_url(tracker.uri), tracker.experiment_name)
        k_max = self._auto_batch(base)
        # This worker's best completed trial: its weights (for the final test) and the data of its
        # diagnostic plots stay in memory; the other outcomes are dropped once recorded.
        local_best: Optional[Tuple[TrialSpec, TrialOutcome]] = None
        progress = _Progress(study_name, n_trials, n_trials - remaining_budget(study, n_trials), self.progress_bar,
                             position)
        # train: stacked-model training; tracking: per-trial metrics and artifacts; bookkeeping:
        # composing configs, creating and ending runs, telling Optuna.
        timing = {"wall_seconds": 0.0, "train_seconds": 0.0, "tracking_seconds": 0.0, "bookkeeping_seconds": 0.0}
        counts = {"ran": 0, "failed": 0}
        started, started_at = time.perf_counter(), time.time()
        trained_at = started_at  # when this launch's last batch of the study finished training
        poll = max(1.0, self.heartbeat_interval / 2)
        # Recording a trial (metrics, images, artifacts), telling Optuna and ending its run happen
        # on ``finisher``, in order, while the next batch trains. A trial becomes COMPLETE only
        # once its results are in MLflow; a crash before that leaves it RUNNING, and the
        # heartbeat check re-runs it. Model-based samplers wait for the tells before asking again,
        # so their suggestions stay reproducible for a seed.
        pending: List[Future] = []
        mine: set = set()  # trial ids this worker has asked and not yet told
        wait_for_tells = self.sampler_name in MODEL_BASED_SAMPLERS

        def finish(spec: TrialSpec, out, heartbeat: Heartbeat) -> None:
            nonlocal local_best
            t0 = time.perf_counter()
            try:
                if out.recorded is not None:
                    out.recorded.result()  # recorded before this job, on the same thread; raises if it failed
                state = self._finish_trial(study, tracker, spec, out)
            except Exception:  # left RUNNING: the heartbeat check fails and re-queues it
                log.exception("could not record trial %d", spec.number)
                state = TrialState.FAIL
            heartbeat.remove([spec.optuna_trial._trial_id])
            mine.discard(spec.optuna_trial._trial_id)
            counts["ran"] += 1
            counts["failed"] += state == TrialState.FAIL
            timing["train_seconds"] += out.seconds
            timing["tracking_seconds"] += out.tracking_seconds
            timing["bookkeeping_seconds"] += time.perf_counter() - t0
            if state == TrialState.COMPLETE and out.weights is not None and (
                    local_best is None or self._better(out.val_acc, local_best[1].val_acc)):
                local_best = (spec, out)
            progress.update(1, lambda: _best_value(study))

        def timed_bookkeeping(job) -> None:
            t0 = time.perf_counter()
            try:
                job()
            finally:
                timing["bookkeeping_seconds"] += time.perf_counter() - t0

        def drain() -> None:
            for future in pending:
                future.result()
            pending.clear()

        specs: List[TrialSpec] = []
        heartbeat = Heartbeat(storage, self.heartbeat_interval).__enter__()  # stopped by the summary job
        try:
            while True:
                if wait_for_tells:
                    drain()
                if counts["ran"] >= min(5, n_trials) and counts["failed"] / counts["ran"] > self.max_failure_rate:
                    drain()
                    tracker.end_run(parent_id, "FAILED")
                    raise SweepError(f"{counts['failed']} of {counts['ran']} trials failed in study {study_name}, "
                                     f"more than hydra.sweeper.max_failure_rate={self.max_failure_rate}; see "
                                     f"the '{TAG_FAILURE}' tag of the failed runs")
                with study_lock(storage, study_name):
                    if isinstance(storage, optuna.storages.RDBStorage):
                        fail_stale_trials(study)
                    k = min(k_max, askable(study, n_trials))
                    asked = []
                    # Under the lock no one else adds or pops trials: the next new trial's number,
                    # and how many re-queued (WAITING) trials ask() will pop first, are known.
                    trials_now = study.get_trials(deepcopy=False) if k else []
                    next_number = len(trials_now)
                    waiting = sum(t.state == TrialState.WAITING for t in trials_now)
                    for i in range(k):
                        if self.sampler_name in RESEEDED_SAMPLERS:
                            # Seeded by (seed, trial number): a relaunch or a second worker
                            # never replays the random draws of an earlier one.
                            study.sampler = make_sampler(self.sampler_name, _trial_seed(seed, next_number),
                                                         plan.search_space, self.sampler_kwargs)
                        asked.append(study.ask(fixed_distributions=plan.search_space) if i < waiting
                                     else ask_new_trial(study, plan.search_space))
                        if asked[-1].number >= next_number:  # a new trial, not a re-queued (WAITING) one
                            next_number = asked[-1].number + 1
                    heartbeat.add([t._trial_id for t in asked])
                    mine.update(t._trial_id for t in asked)
                if not asked:
                    open_trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
                    if all(t._trial_id in mine for t in open_trials):
                        break  # only our own trials are still being recorded: finish in the background
                    if pending:
                        drain()
                        continue
                    time.sleep(poll)  # wait for other workers' trials (or fail them when stale)
                    continue
                t0 = time.perf_counter()
                specs, create_runs = self._start_trials(asked, base, plan, cell, study, tracker, parent_id,
                                                        overrides_tag, requeued=min(waiting, len(asked)))
                pending.append(finisher.submit(timed_bookkeeping, create_runs))  # while the batch trains
                timing["bookkeeping_seconds"] += time.perf_counter() - t0
                for spec in specs:
                    if spec.cfg is None:  # its config failed: already told FAIL
                        heartbeat.remove([spec.optuna_trial._trial_id])
                        mine.discard(spec.optuna_trial._trial_id)
                        counts["ran"] += 1
                        counts["failed"] += 1
                        progress.update(1, lambda: _best_value(study))
                runnable = [s for s in specs if s.cfg is not None]
                if not runnable:
                    specs = []
                    continue
                outcomes = yield tracker, runnable  # trained by _run_side_by_side, with the other studies' batches
                trained_at = time.time()
                pending += [finisher.submit(finish, spec, out, heartbeat) for spec, out in zip(runnable, outcomes)]
                specs = []
        except (KeyboardInterrupt, _StoppedWithOtherStudy):
            try:
                drain()  # trials already trained are recorded and told
            finally:
                self._interrupt(study, tracker, handler, specs)
                tracker.end_run(parent_id, "KILLED")
                heartbeat.__exit__(None, None, None)
                progress.close()
            raise
        except BaseException:
            heartbeat.__exit__(None, None, None)
            raise

        def summarize() -> Dict[str, Any]:  # runs on finisher after the study's last tell
            heartbeat.__exit__(None, None, None)
            progress.close()
            timing["wall_seconds"] = time.perf_counter() - started
            summary = self._finalize(study, tracker, parent_id, base, n_trials, local_best)
            timing["finalize_seconds"] = time.perf_counter() - started - timing["wall_seconds"]
            # started_at / trained_at / ended_at (Unix seconds) place the studies of a launch on one
            # time line (they run side by side; recording overlaps the next round's training).
            summary["this_launch"] = {"trials_run": counts["ran"], "batch_size": k_max,
                                      **{k: round(v, 3) for k, v in timing.items()},
                                      "started_at": round(started_at, 3), "trained_at": round(trained_at, 3),
                                      "ended_at": round(time.time(), 3)}
            return summary

        return finisher.submit(summarize)

    def _start_trials(self, asked, base, plan, cell, study, tracker, parent_id, overrides_tag, requeued=0):
        """Compose each asked trial's config; returns (specs, create_runs).

        The first ``requeued`` of ``asked`` were popped from the WAITING queue (re-runs of failed
        trials); the others are new.

        ``create_runs()`` creates the MLflow runs of the trials that will train; the sweep runs it
        on the finisher thread while they train (recording, on the same thread, comes after it).
        A trial whose config fails gets its run here, is told FAIL and has ``cfg=None``.
        """
        specs, new_runs = [], []
        for i, trial in enumerate(asked):
            params = dict(trial.params)
            cfg, error = None, None
            try:
                cfg = self._trial_config(base, plan, cell, params)
            except Exception as e:
                error = f"error: config: {e}"
            source = cfg if cfg is not None else base
            name = f"{source.loss.name}-{trial.number:03d} " + " ".join(
                f"{k.split('.')[-1]}={_short(v)}" for k, v in params.items())
            trial_overrides = " ".join(f"{k}={v}" for k, v in params.items())
            tags = {TAG_ROLE: "trial", TAG_PARENT: parent_id, TAG_STUDY: study.study_name,
                    TAG_TRIAL_NUMBER: trial.number, TAG_TRIAL_ID: trial._trial_id,
                    TAG_TRIAL_STATE: "RUNNING", TAG_OVERRIDES: f"{overrides_tag} {trial_overrides}".strip()}
            run_params = trial_params(source, resolve_device(source.device.type))
            run_params.update({k: v for k, v in params.items() if k.split(".")[-1] not in run_params})
            # The final-state tags go out with the metrics: ending the run is then one request.
            spec = TrialSpec(cfg=cfg, number=trial.number, optuna_trial=trial, record_tags=_final_state_tags)
            specs.append(spec)
            if error is None:
                new_runs.append((spec, name, tags, run_params, i < requeued))
                continue
            self._create_trial_run(study, tracker, spec, name, tags, run_params, i < requeued)
            log.warning("trial %d: %s", trial.number, error)
            trial.set_user_attr(ATTR_FAIL_REASON, error)
            _tell(study, trial, state=TrialState.FAIL)
            self._close_run(tracker, study, study._storage.get_trial(trial._trial_id), "FAIL", error)

        def create_runs() -> None:
            for spec, name, tags, run_params, requeued_trial in new_runs:
                try:
                    self._create_trial_run(study, tracker, spec, name, tags, run_params, requeued_trial)
                except Exception:  # its recording then fails: left RUNNING, the heartbeat check re-runs it
                    log.exception("could not create the MLflow run of trial %d", spec.number)

        return specs, create_runs

    def _better(self, value: float, than: float) -> bool:
        return value > than if self.direction == "maximize" else value < than

    def _reopen_parent(self, study, tracker: Tracker, parent_id: str) -> None:
        """Reopen the study's MLflow parent run; a clear error if the tracking store lacks it."""
        from mlflow.exceptions import MlflowException

        try:
            tracker.reopen_run(parent_id)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise SweepError(
                f"study {study.study_name!r} in the Optuna storage {redact_url(self.storage_url)} records its "
                f"trials in MLflow run {parent_id}, which the tracking store {redact_url(tracker.uri)} does not "
                f"have: the two stores are out of sync (was the MLflow store deleted, or MLFLOW_TRACKING_URI / "
                f"tracking.uri changed?). Point tracking.uri at the store this study started with, or start "
                f"a new study: hydra.sweeper.study_name=<new name>, or delete this one from the Optuna "
                f"storage.") from None

    @staticmethod
    def _create_trial_run(study, tracker: Tracker, spec: TrialSpec, name: str, tags: Dict[str, Any],
                          run_params: Dict[str, Any], requeued: bool = True) -> None:
        """Create the trial's MLflow run and link it both ways (tags here, a user attr in Optuna).
        ``requeued``: the trial may be a re-run (a new trial has nothing to look up)."""
        trial = spec.optuna_trial
        retry_of = study._storage.get_trial_system_attrs(trial._trial_id).get("failed_trial") if requeued else None
        if retry_of is not None:
            tags = {**tags, TAG_RETRY_OF: retry_of}
        spec.run_id = tracker.create_run(name, tags=tags, params=run_params)
        trial.set_user_attr(ATTR_RUN_ID, spec.run_id)
        if retry_of is not None:  # a re-queued trial inherits its original's attributes
            trial.set_user_attr(ATTR_FAIL_REASON, None)

    def _finish_trial(self, study, tracker, spec: TrialSpec, out: TrialOutcome) -> TrialState:
        """Tell Optuna, then end the MLflow run in the agreeing state."""
        trial = spec.optuna_trial
        state, reason = _final_state(out)
        if state == TrialState.COMPLETE:
            _tell(study, trial, out.val_acc)
        elif state == TrialState.PRUNED:
            _tell(study, trial, state=TrialState.PRUNED)
        else:
            trial.set_user_attr(ATTR_FAIL_REASON, reason)
            _tell(study, trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, reason)
        self._close_run(tracker, study, trial, state.name, reason, run_id=spec.run_id, logged_tags=out.logged_tags)
        return state

    def _close_run(self, tracker: Tracker, study, trial, state: str, reason: Optional[str], run_id=None,
                   logged_tags: Optional[Dict[str, str]] = None) -> None:
        """End a trial's MLflow run to match its Optuna state (creating it if it never got one).
        ``logged_tags``: tags the run already got with its metrics (not sent again)."""
        if run_id is None:
            run_id = self._ensure_run(tracker, study, trial)
        tags = _state_tags(state, reason)
        if tags != logged_tags:
            tracker.set_tags(run_id, tags)
        tracker.end_run(run_id, mlflow_status(state, reason))

    @staticmethod
    def _ensure_run(tracker: Tracker, study, trial) -> str:
        """The trial's MLflow run id, found by its tags or created bare if the trial never got one
        (its worker died, or creating the run failed, between ask and training). Call it while
        the trial is unfinished: Optuna refuses the link to a finished trial (the run has its tags)."""
        run_id = trial.user_attrs.get(ATTR_RUN_ID)
        if run_id is not None:
            return run_id
        # Its worker may have died between creating the run and linking it: look it up first.
        found = tracker.search(f"tags.`{TAG_STUDY}` = '{study.study_name}' and "
                               f"tags.`{TAG_TRIAL_ID}` = '{trial._trial_id}' and tags.`{TAG_ROLE}` = 'trial'")
        if found:
            run_id = found[0].info.run_id
        else:
            run_id = tracker.create_run(f"trial-{trial.number:03d}", tags={
                TAG_ROLE: "trial", TAG_PARENT: study.user_attrs.get(ATTR_PARENT_RUN), TAG_STUDY: study.study_name,
                TAG_TRIAL_NUMBER: trial.number, TAG_TRIAL_ID: trial._trial_id})
        try:
            study._storage.set_trial_user_attr(trial._trial_id, ATTR_RUN_ID, run_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %d finished without an MLflow run; run %s has its tags", trial.number, run_id)
        return run_id

    def _interrupt(self, study, tracker, handler: StaleTrialHandler, specs: List[TrialSpec]) -> None:
        """Ctrl-C: open trials become FAIL (Optuna) / KILLED (MLflow) and are re-queued."""
        for spec in specs:
            frozen = study._storage.get_trial(spec.optuna_trial._trial_id)
            if frozen.state != TrialState.RUNNING:
                continue
            study._storage.set_trial_user_attr(frozen._trial_id, ATTR_FAIL_REASON, FAIL_INTERRUPTED)
            _tell(study, spec.optuna_trial, state=TrialState.FAIL)
            self._close_run(tracker, study, frozen, "FAIL", FAIL_INTERRUPTED, run_id=spec.run_id)
            if self.max_retries > 0:
                handler.retry(study, frozen)
        log.warning("interrupted: %d open trials marked FAIL/KILLED and re-queued; rerun the command to resume",
                    len(specs))

    def _reconcile(self, study, tracker: Tracker) -> None:
        """After a crash: finished Optuna trials whose MLflow run is still RUNNING get its state."""
        running_runs = {r.info.run_id for r in tracker.search(
            f"tags.`{TAG_STUDY}` = '{study.study_name}' and attributes.status = 'RUNNING' "
            f"and tags.`{TAG_ROLE}` = 'trial'")}
        for t in study.get_trials(deepcopy=False):
            run_id = t.user_attrs.get(ATTR_RUN_ID)
            if t.state.is_finished() and run_id in running_runs:
                self._close_run(tracker, study, t, t.state.name, t.user_attrs.get(ATTR_FAIL_REASON), run_id=run_id)

    # ------------------------------------------------------------------ the end of a study
    def _finalize(self, study, tracker, parent_id, base, n_trials, local_best) -> Dict[str, Any]:
        from .study_report import log_study_report

        trials = study.get_trials(deepcopy=False)
        counts = {s.name: sum(t.state == s for t in counted_trials(trials)) for s in
                  (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        summary: Dict[str, Any] = {"study_name": study.study_name, "n_trials": n_trials, "trials": counts,
                                   "mlflow_parent_run_id": parent_id}
        completed = [t for t in trials if t.state == TrialState.COMPLETE]
        with study_lock(study._storage, study.study_name):
            done_before = study.user_attrs.get(ATTR_FINALIZED)
            if completed:
                best = study.best_trial
                summary.update(best_trial=best.number, best_val_acc=best.value, best_params=dict(best.params),
                               best_run_id=best.user_attrs.get(ATTR_RUN_ID))
                W = local_best[1].weights if local_best and local_best[0].number == best.number else None
                test_acc = self._best_test_accuracy(best, base, tracker, W)
                summary["best_test_acc"] = test_acc
            write_report = done_before != len(trials)  # one worker reports each state of the study
            if write_report:
                study.set_user_attr(ATTR_FINALIZED, len(trials))
        if local_best is not None:
            self._plot_local_best(tracker, *local_best)
        if write_report:  # outside the lock: plots take seconds, and asks of other studies wait on it
            log_study_report(study, tracker, parent_id, summary)
        tracker.end_run(parent_id, "FINISHED")
        if completed:
            log.info("study %s: best val_acc %.4f (trial %d, %s); its test_acc %.4f", study.study_name,
                     summary["best_val_acc"], summary["best_trial"], summary["best_params"], summary["best_test_acc"])
        return summary

    @staticmethod
    def _plot_local_best(tracker: Tracker, spec: TrialSpec, out: TrialOutcome) -> None:
        """The diagnostic plots (loss curve, confusion) of this worker's best trial of the study,
        when tracking.diagnostic_plots=best kept them off the other trials."""
        t = spec.cfg.tracking
        if not t.log_images or t.diagnostic_plots != "best":
            return
        cfg = spec.cfg
        try:
            data = load_data(cfg.dataset, cfg.model.dtype, resolve_device(cfg.device.type))
            with tracker.artifact_folder(spec.run_id) as tmp:
                save_diagnostic_plots(tmp, spec, out, data)
        except Exception:  # the study's summary matters more than two images
            log.exception("could not draw the diagnostic plots of trial %d", spec.number)

    def _best_test_accuracy(self, best, base, tracker: Tracker, W: Optional[torch.Tensor]) -> float:
        """Test accuracy of the study's best trial (selection was by validation accuracy).
        ``W`` (D, C): its weights when this worker trained it, else read from its run."""
        run_id = best.user_attrs.get(ATTR_RUN_ID)
        run = tracker.get_run(run_id)
        if "test_acc" in run.data.metrics:
            return run.data.metrics["test_acc"]
        device = resolve_device(base.device.type)
        data = load_data(base.dataset, base.model.dtype, device)
        if W is None:  # trained by another worker: read its saved weights
            import tempfile

            from mlflow.exceptions import MlflowException

            import linear_models as lm

            try:
                with tempfile.TemporaryDirectory() as tmp:
                    W = lm.load_classifier(tracker.download_artifact(run_id, "weights.pt", tmp)).W
            except (MlflowException, OSError) as e:  # e.g. tracking.log_weights=false
                log.warning("no test_acc for trial %d here: its weights are not in its run (%s); the worker "
                            "that trained it logs it", best.number, e)
                return float("nan")
        import linear_models as lm

        W = W.to(device, data["X_test"].dtype).unsqueeze(1)  # (D, 1, C); scored like the trials' evaluations
        acc = float(lm.batched_accuracy(W, data["X_test"], data["y_test"], matmul_dtype=matmul_dtype(base.model, device))[0])
        tracker.log_metrics(run_id, {"test_acc": acc}, step=int(run.data.metrics.get("iterations", 0)))
        tracker.set_tags(run_id, {"test_acc_of": "best trial of its study (selected by val_acc)"})
        return acc

    def _write_results(self, summaries: List[Dict[str, Any]]) -> None:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        clean = [{k: _plain(v) for k, v in s.items()} for s in summaries]
        with open(self.sweep_dir / "optimization_results.yaml", "w") as fh:
            yaml.safe_dump({"direction": self.direction, "metric": "val_acc", "studies": clean}, fh, sort_keys=False)
        for s in summaries:
            if "best_val_acc" in s:
                print(f"[{s['study_name']}] best val_acc={s['best_val_acc']:.4f} test_acc={s['best_test_acc']:.4f} "
                      f"params={s['best_params']} trials={s['trials']}")


class _Progress:
    """A tqdm bar over trials on a terminal; plain log lines otherwise."""

    def __init__(self, name: str, total: int, done: int, enabled: Optional[bool], position: int = 0):
        self.name, self.total, self.done = name, total, done
        self._shown_at = -math.inf
        use_bar = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None
        if use_bar:
            from tqdm import tqdm

            # One line per study: a study's last trials are recorded while the next one trains.
            self.bar = tqdm(total=total, initial=done, desc=name, unit="trial", dynamic_ncols=True, position=position)

    def update(self, n: int, best_value: Callable[[], Optional[float]]) -> None:
        """``best_value()`` (a storage query) is asked at most once a second, and at the end."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        now = time.monotonic()
        if self.done < self.total and now - self._shown_at < 1.0:
            return
        self._shown_at = now
        best = best_value()
        if self.bar is not None:
            if best is not None:
                self.bar.set_postfix(best_val_acc=f"{best:.4f}")
        else:
            log.info("%s: %d/%d trials, best val_acc %s", self.name, self.done, self.total,
                     "n/a" if best is None else f"{best:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _best_value(study) -> Optional[float]:
    try:
        return study.best_value
    except ValueError:
        return None


def _final_state(out: TrialOutcome):
    """(Optuna state, failure reason or None) of a trained trial."""
    if out.status == COMPLETED and math.isfinite(out.val_acc):
        return TrialState.COMPLETE, None
    if out.status == PRUNED:
        return TrialState.PRUNED, None
    return TrialState.FAIL, out.message or f"{out.status}: no finite validation accuracy"


def _state_tags(state: str, reason: Optional[str]) -> Dict[str, str]:
    """The MLflow tags of a trial's final state (``state``: an Optuna state name)."""
    tags = {TAG_TRIAL_STATE: state}
    if reason:
        tags[TAG_FAILURE] = reason
    return tags


def _final_state_tags(out: TrialOutcome) -> Dict[str, str]:
    state, reason = _final_state(out)
    return _state_tags(state.name, reason)


def _tell(study, trial, *args, **kwargs) -> None:
    """study.tell, tolerating the grid sampler's study.stop() once the grid is used up
    (Optuna stores the state before that error is raised)."""
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def _trial_seed(seed: int, number: int) -> int:
    return (seed * 1_000_003 + number) % (2**32)


def _corners(dist) -> List[Any]:
    if hasattr(dist, "choices"):
        return list(dist.choices)
    return [dist.low, dist.high]


def _short(v) -> str:
    return f"{v:.2e}" if isinstance(v, float) else str(v)


def _plain(v):
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, float) or isinstance(v, (int, str, bool)) or v is None:
        return v
    return str(v)
