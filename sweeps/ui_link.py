"""A link that opens a sweep's results in the MLflow 3 UI: the experiment's runs table, ranked.

A fresh browser opening ``http://host:5000/#/experiments/<id>`` lands on the GenAI "Overview"
page (traces, token usage: empty for a sweep). What the MLflow 3.17 UI reads from its URL
(``mlflow/server/js/src/experiment-tracking``, checked against the 3.17.2 bundle):

- ``#/experiments/<id>/runs`` (``RoutePaths.experimentPageTabRuns``) opens the runs tab;
  ``workflowType=machine_learning`` (``WorkflowTypeContext``) switches the side bar to
  "Model training" without touching the browser's stored preference;
- the search facets (``EXPERIMENT_PAGE_QUERY_PARAM_KEYS`` in
  ``hooks/useExperimentPageSearchFacets.tsx``): ``searchFilter``, ``orderByKey`` (a canonical
  column key, e.g. ``metrics.`val_acc```), ``orderByAsc`` (``"true"``/``"false"``),
  ``startTime``, ``lifecycleFilter``, ``modelVersionFilter``, ``datasetsFilter`` (base64 JSON);
- ``compareRunsMode`` (``TABLE`` | ``CHART`` | ...), ``isPreview``, ``experiments``;
- ``viewStateShareKey=<id>``: a saved / shared view, the experiment tag
  ``mlflow.sharedViewState.<id>`` whose value is an envelope ``{"name", "createdAt",
  "state"}`` (``utils/savedViewEnvelope.ts``) with ``state`` the JSON (or deflate-compressed
  JSON) of search facets plus UI state (``selectedColumns``, ``columnOrder``, ``columnWidths``,
  ... of ``EXPERIMENT_PAGE_UI_STATE_FIELDS``). The reader (``useSharedExperimentViewState``)
  ignores the view when any search-facet parameter is also in the URL, and drops
  ``runsExpanded`` / ``runsPinned`` / ``runsHidden`` from it.

The columns shown (``selectedColumns``) are not a URL parameter in 3.17: they live in the
browser's local storage, or in a saved view. So the link with columns is two steps:
``save_runs_table_view`` writes the view tag (idempotent), ``runs_table_url(view_id=...)`` opens
it; :func:`results_link` does both. Without a view the URL still opens the runs table sorted by
the metric, with MLflow's default columns. Sorting by a metric lists every run flat (the study's
parent runs, without the metric, last), so all trials are in one ranked table.

    python -m sweeps.ui_link --tracking-uri sqlite:///mlflow.db --experiment linear-sweeps-cifar10
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from typing import Any, Dict, Optional, Sequence, Tuple
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

DEFAULT_METRICS = ("val_acc", "test_acc")
DEFAULT_PARAMS = ("learning_rate", "reg", "loss")
DEFAULT_ORDER_BY = "metrics.`val_acc`"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # EXPERIMENT_PAGE_VIEW_STATE_SHARE_TAG_PREFIX
VIEW_URL_PARAM = "viewStateShareKey"  # EXPERIMENT_PAGE_VIEW_STATE_SHARE_URL_PARAM_KEY
_SERVER_SCHEMES = ("http", "https")
_EMBEDDED_SCHEMES = ("", "file", "sqlite", "postgresql", "mysql", "mssql")
_HOSTED = ("databricks", "databricks-uc", "uc")  # a hosted UI elsewhere: not served by `mlflow ui`


def column_key(kind: str, name: str) -> str:
    """The UI's canonical column / sort key: ``metrics.`val_acc```, ``params.`reg```."""
    return f"{kind}.`{name}`"


def _order(order_by: str) -> Tuple[str, bool]:
    """``"metrics.`val_acc`"`` (descending) or ``"metrics.`val_acc` ASC"`` -> (key, ascending)."""
    key, _, direction = order_by.strip().rpartition(" ")
    if direction.upper() in ("ASC", "DESC") and key:
        return key.strip(), direction.upper() == "ASC"
    return order_by.strip(), False


def runs_table_state(*, metrics: Sequence[str] = DEFAULT_METRICS, params: Sequence[str] = DEFAULT_PARAMS,
                     order_by: str = DEFAULT_ORDER_BY, search_filter: str = "") -> Dict[str, Any]:
    """The saved-view state: sort, search, and the columns shown (metrics first, in this order)."""
    order_key, ascending = _order(order_by)
    columns = [column_key("metrics", m) for m in metrics] + [column_key("params", p) for p in params]
    return {
        "searchFilter": search_filter,
        "orderByKey": order_key,
        "orderByAsc": ascending,
        "selectedColumns": columns,
        # The always-shown attribute columns first, then ours; run names are long.
        "columnOrder": [column_key("attributes", "Run Name"), "runDateAndNestInfo", "duration", *columns],
        "columnWidths": {column_key("attributes", "Run Name"): 330},
    }


def view_id_for(state: Dict[str, Any]) -> str:
    """A stable id for a view state: the same columns and sort give the same link."""
    digest = hashlib.sha1(json.dumps(state, sort_keys=True).encode()).hexdigest()[:10]
    return f"linear-sweeps-{digest}"


def view_tag(state: Dict[str, Any], name: str, created_at_ms: Optional[int] = None) -> Tuple[str, str]:
    """(experiment tag key, value) of a saved view holding ``state`` (plain-JSON ``state``)."""
    created = int(time.time() * 1000) if created_at_ms is None else int(created_at_ms)
    value = json.dumps({"name": name, "createdAt": created, "state": json.dumps(state, sort_keys=True)})
    return VIEW_TAG_PREFIX + view_id_for(state), value


def save_runs_table_view(client: Any, experiment_id: str, *, metrics: Sequence[str] = DEFAULT_METRICS,
                         params: Sequence[str] = DEFAULT_PARAMS, order_by: str = DEFAULT_ORDER_BY,
                         search_filter: str = "", name: Optional[str] = None) -> str:
    """Store the runs-table view on the experiment (an MLflow saved view); returns its id.

    Idempotent: an existing tag with the same state is left as it is. ``client`` is an
    ``mlflow.MlflowClient``; the tag needs edit rights on the experiment.
    """
    state = runs_table_state(metrics=metrics, params=params, order_by=order_by, search_filter=search_filter)
    order_key, ascending = _order(order_by)
    label = name or f"{order_key.split('`')[1] if '`' in order_key else order_key} ranking"
    key, value = view_tag(state, label)
    existing = client.get_experiment(experiment_id).tags.get(key)
    if existing is not None:
        try:
            if json.loads(json.loads(existing)["state"]) == state:
                return view_id_for(state)
        except (ValueError, KeyError, TypeError):
            pass
    client.set_experiment_tag(experiment_id, key, value)
    return view_id_for(state)


def runs_table_url(ui_base: str, experiment_id: str, *, metrics: Sequence[str] = DEFAULT_METRICS,
                   params: Sequence[str] = DEFAULT_PARAMS, order_by: str = DEFAULT_ORDER_BY,
                   search_filter: str = "", view_id: Optional[str] = None) -> str:
    """The URL of the experiment's runs table in the model-training view, best ``order_by`` first.

    With ``view_id`` (from :func:`save_runs_table_view` with the same arguments) the table shows
    ``metrics`` and ``params`` as columns; without, MLflow's default columns (a 3.17 URL cannot
    name columns). ``order_by``: a column key, descending unless it ends with `` ASC``.
    """
    if view_id is not None:
        expected = view_id_for(runs_table_state(metrics=metrics, params=params, order_by=order_by,
                                                search_filter=search_filter))
        if view_id != expected:
            raise ValueError(f"view {view_id!r} was not saved for these columns and sort (that one is {expected!r})")
        query = {VIEW_URL_PARAM: view_id, "workflowType": "machine_learning"}
    else:
        order_key, ascending = _order(order_by)
        query = {"workflowType": "machine_learning", "searchFilter": search_filter, "orderByKey": order_key,
                 "orderByAsc": "true" if ascending else "false"}
    route = f"/experiments/{quote(str(experiment_id), safe='')}/runs"
    return f"{ui_base.rstrip('/')}/#{route}?{urlencode(query, quote_via=quote)}"


def run_artifact_url(ui_base: str, experiment_id: str, run_id: str, path: str) -> str:
    """The run page with one artifact open (``Routes.getRunPageRoute(exp, run, path)``)."""
    route = f"/experiments/{quote(str(experiment_id), safe='')}/runs/{quote(run_id, safe='')}/artifacts/{quote(path)}"
    return f"{ui_base.rstrip('/')}/#{route}?workflowType=machine_learning"


def _redacted(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def ui_base_for(tracking_uri: str) -> Tuple[str, Optional[str]]:
    """Where the UI of ``tracking_uri`` is, and the command that serves it (None: already served).

    A tracking server (http/https) serves its own UI. An embedded store (a SQLite / database
    URI, a file store) has none: ``mlflow ui --backend-store-uri <uri>`` serves it on
    127.0.0.1:5000 (a password in the URI is shown as ``***``).
    """
    uri = str(tracking_uri).strip()
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in _SERVER_SCHEMES:
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host  # no credentials in a browser URL
        return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", "")), None
    hosted = uri.split(":")[0].lower() in _HOSTED
    if not hosted and (scheme.split("+")[0] in _EMBEDDED_SCHEMES or len(scheme) == 1):  # 1: a drive letter
        return LOCAL_UI, f"mlflow ui --backend-store-uri {shlex.quote(_redacted(uri))}"
    raise ValueError(f"no local MLflow UI for tracking URI {uri!r} (expected http(s)://, sqlite:///, a database "
                     "URI or a file store)")


def results_link(tracking_uri: str, experiment_id: str, *, client: Any = None, **columns: Any
                 ) -> Tuple[str, Optional[str]]:
    """(URL of the ranked runs table, command to start the UI or None): saves the view first.

    When the view cannot be written (no edit rights, a read-only store) the URL still opens the
    runs table sorted, with MLflow's default columns.
    """
    ui_base, command = ui_base_for(tracking_uri)
    if client is None:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        view_id: Optional[str] = save_runs_table_view(client, experiment_id, **columns)
    except Exception as e:  # noqa: BLE001 - a link without columns beats no link
        print(f"linear-sweeps: could not save the runs-table view ({type(e).__name__}: {e}); "
              "the link opens MLflow's default columns", file=sys.stderr)
        view_id = None
    columns.pop("name", None)
    return runs_table_url(ui_base, experiment_id, view_id=view_id, **columns), command


def main(argv: Optional[Sequence[str]] = None) -> int:
    import os

    import mlflow

    p = argparse.ArgumentParser(prog="python -m sweeps.ui_link", description=__doc__.split("\n")[0])
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    p.add_argument("--experiment", required=True, help="experiment name (or id)")
    args = p.parse_args(argv)
    client = mlflow.MlflowClient(tracking_uri=args.tracking_uri)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None and args.experiment.isdigit():
        exp = client.get_experiment(args.experiment)
    if exp is None:
        print(f"no experiment {args.experiment!r} at {args.tracking_uri}", file=sys.stderr)
        return 2
    url, command = results_link(args.tracking_uri, exp.experiment_id, client=client)
    if command:
        print(f"start the UI:  {command}")
    print(f"then open:     {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
