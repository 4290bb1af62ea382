"""``GET /metrics`` read as Prometheus reads it: a strict parser of the text format
0.0.4 (no client library needed), every family ``docs/serve.md`` names with its type
and label names, histograms whose buckets, sum and count agree, no run id as a label,
and an idle queue's series present at 0."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from tests.web.test_api import Api, _api, wait_status

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)(?: (-?\d+))?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


@dataclass
class Family:
    name: str
    type: str = "untyped"
    help: str | None = None
    # (sample name, labels, value), in the exposition's order
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def _labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        assert m is not None, f"bad labels: {text!r}"
        assert m.group(1) not in out, f"label {m.group(1)} twice: {text!r}"
        value = m.group(2).replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        out[m.group(1)] = value
        pos = m.end()
    return out


def _value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text)
    assert re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text), f"bad value {text!r}"
    return float(text)


def parse(text: str) -> dict[str, Family]:
    """The families of an exposition; asserts what the format requires: a final
    newline, HELP and TYPE at most once per family and TYPE before its samples, a
    family's samples together, every series once, valid names, labels and values."""
    assert text.endswith("\n")
    families: dict[str, Family] = {}
    current: Family | None = None
    closed: set[str] = set()
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()

    def family_of(sample: str) -> str:
        for suffix in ("_bucket", "_sum", "_count"):
            base = sample.removesuffix(suffix)
            if base != sample and base in families and families[base].type in (
                    "histogram", "summary"):
                return base
        return sample

    for line in text[:-1].split("\n"):
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                assert re.fullmatch(_NAME, name), line
                fam = families.get(name)
                if fam is None:
                    assert name not in closed, f"family {name} split: {line}"
                    fam = families[name] = Family(name)
                if current is not None and current is not fam:
                    closed.add(current.name)
                current = fam
                if parts[1] == "TYPE":
                    assert fam.type == "untyped" and not fam.samples, f"late TYPE: {line}"
                    assert len(parts) == 4 and parts[3] in _TYPES, line
                    fam.type = parts[3]
                else:
                    assert fam.help is None, f"HELP twice: {line}"
                    fam.help = parts[3] if len(parts) == 4 else ""
            continue
        assert line.strip(), "blank line"
        m = _SAMPLE.match(line)
        assert m is not None, f"bad sample line: {line!r}"
        labels = _labels(m.group(2) or "")
        key = (m.group(1), tuple(sorted(labels.items())))
        assert key not in seen, f"series twice: {line}"
        seen.add(key)
        name = family_of(m.group(1))
        fam = families.get(name)
        if fam is None:
            assert name not in closed, f"family {name} split: {line}"
            fam = families[name] = Family(name)
        if current is not None and current is not fam:
            closed.add(current.name)
        current = fam
        fam.samples.append((m.group(1), labels, _value(m.group(3))))
    return families


def histograms(fam: Family, label: str | None = None) -> dict[str, Family]:
    """A histogram family's series, one family each, by the value of ``label`` (None:
    the family has one series, under "")."""
    out: dict[str, Family] = {}
    for sample, labels, value in fam.samples:
        key = "" if label is None else labels[label]
        rest = {k: v for k, v in labels.items() if k != label}
        out.setdefault(key, Family(fam.name, fam.type, fam.help)).samples.append(
            (sample, rest, value))
    return out


def check_histogram(fam: Family) -> None:
    buckets = [(s[1], s[2]) for s in fam.samples if s[0] == fam.name + "_bucket"]
    sums = [s[2] for s in fam.samples if s[0] == fam.name + "_sum"]
    counts = [s[2] for s in fam.samples if s[0] == fam.name + "_count"]
    assert len(sums) == 1 and len(counts) == 1, fam
    assert all(set(labels) == {"le"} for labels, _ in buckets), buckets
    assert all(not labels for sample, labels, _ in fam.samples
               if not sample.endswith("_bucket")), fam
    bounds = [_value(labels["le"]) for labels, _ in buckets]
    assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), bounds
    assert bounds[-1] == math.inf
    values = [v for _, v in buckets]
    assert values == sorted(values), f"buckets not cumulative: {values}"
    assert values[-1] == counts[0], (values, counts)
    assert sums[0] >= 0 and (counts[0] > 0 or sums[0] == 0)


#: What docs/serve.md's table names: type and label names of each family.
DOCUMENTED = {
    "tether_runs": ("gauge", {"status"}),
    "tether_queue_depth": ("gauge", {"queue"}),
    "tether_queue_oldest_age_seconds": ("gauge", {"queue"}),
    "tether_step_duration_seconds": ("histogram", {"le"}),
    "tether_workflow_runs": ("gauge", {"workflow", "status"}),
    "tether_step_name_duration_seconds": ("histogram", {"step", "le"}),
    "tether_workflow_runs_ended_total": ("counter", {"workflow", "status"}),
    "tether_workflow_run_duration_seconds": ("histogram", {"workflow", "le"}),
    "tether_llm_calls_total": ("counter", set()),
    "tether_llm_tokens_total": ("counter", {"type", "outcome"}),
    "tether_llm_cost_usd_total": ("counter", {"outcome"}),
    "tether_workers": ("gauge", set()),
    "tether_metrics_age_seconds": ("gauge", set()),
    "tether_metrics_computation_seconds": ("gauge", set()),
}


@pytest.fixture
async def api_any(store_url: str) -> AsyncIterator[Api]:
    async for a in _api(store_url, None):
        yield a


async def test_metrics_parse_strictly_with_every_documented_family(api_any: Api) -> None:
    """After runs that completed, failed, retried a step, started a child and waited
    for a signal: every documented family, with its type and label names; the
    histogram consistent; no run id in any label; the figures the store holds."""
    api = api_any
    async with api.app.worker():
        for wf, inp, rid in (("steps", [3], "m-steps"), ("retrying", ["x"], "m-retry"),
                             ("parent", ["bob"], "m-parent"), ("fixable", ["bad"], "m-fail"),
                             ("wait_go", None, "m-wait")):
            body = {"workflow": wf, "run_id": rid} | ({"input": inp} if inp else {})
            assert (await api.http.post("/api/v1/runs", json=body)).status_code == 201
        for rid, status in (("m-steps", "completed"), ("m-retry", "completed"),
                            ("m-parent", "completed"), ("m-fail", "failed"),
                            ("m-wait", "waiting")):
            await wait_status(api, rid, status)
        families = parse((await api.http.get("/metrics")).text)
    for name, (kind, label_names) in DOCUMENTED.items():
        assert name in families, name
        fam = families[name]
        assert fam.type == kind and fam.help, (name, fam.type)
        assert fam.samples, name
        for sample, labels, _ in fam.samples:
            if kind != "histogram" or sample.endswith("_bucket"):
                assert set(labels) == label_names, (sample, labels)
            else:
                assert set(labels) == label_names - {"le"}, (sample, labels)
    check_histogram(families["tether_step_duration_seconds"])
    per_step = histograms(families["tether_step_name_duration_seconds"], "step")
    for series in per_step.values():
        check_histogram(series)
    run_ids = {r.run_id for r in await api.app.store.run_search(limit=100)}
    assert run_ids
    for fam in families.values():
        for _, labels, value in fam.samples:
            assert not set(labels.values()) & run_ids, labels
            if fam.type == "counter":
                assert value >= 0
    runs = {labels["status"]: v for _, labels, v in families["tether_runs"].samples}
    by_status: dict[str, int] = {}
    by_workflow: dict[tuple[str, str], int] = {}
    for r in await api.app.store.run_search(limit=100):
        by_status[r.status] = by_status.get(r.status, 0) + 1
        by_workflow[(r.workflow, r.status)] = by_workflow.get((r.workflow, r.status), 0) + 1
    assert {s: v for s, v in runs.items() if v} == by_status
    workflow_runs = {(labels["workflow"], labels["status"]): v
                     for _, labels, v in families["tether_workflow_runs"].samples}
    assert {k: v for k, v in workflow_runs.items() if v} == by_workflow
    # each registered workflow, and each with runs, has a series of every status that
    # tether_runs has, 0 included
    workflows = {w for w, _ in by_workflow} | set(await api.app.store.workflow_list())
    assert set(workflow_runs) == {(w, s) for w in workflows for s in runs}
    # the ended runs (nothing purged nor retried here): the gauge's ended statuses, each
    # workflow's histogram counting them
    ended = ("completed", "failed", "cancelled")
    ends = {(labels["workflow"], labels["status"]): v
            for _, labels, v in families["tether_workflow_runs_ended_total"].samples}
    assert ends == {k: v for k, v in workflow_runs.items() if k[1] in ended}
    per_workflow = histograms(families["tether_workflow_run_duration_seconds"], "workflow")
    for series in per_workflow.values():
        check_histogram(series)
    assert {w: series.samples[-1][2] for w, series in per_workflow.items()} == {
        w: sum(ends.get((w, s), 0) for s in ended) for w in workflows}
    # steps 3 + retrying 1 + the child's 1 + fixable 2
    count = families["tether_step_duration_seconds"].samples[-1]
    assert count[0] == "tether_step_duration_seconds_count" and count[2] == 7
    # per step name: steps' `work` x3, retrying's `flaky` (its two attempts one step),
    # parent's child greet's `hello` and fixable's `hello`, then its `fragile`
    counts = {name: series.samples[-1][2] for name, series in per_step.items()}
    assert counts == {"work": 3, "flaky": 1, "hello": 2, "fragile": 1}, counts
    # the series of the step names add up to the histogram of all steps
    total = families["tether_step_duration_seconds"].samples
    for i, (sample, labels, value) in enumerate(total):
        # (each sum printed to the microsecond)
        assert sum(series.samples[i][2] for series in per_step.values()) == pytest.approx(
            value, abs=1e-5 * len(per_step)), sample
        named = sample.replace("tether_step_", "tether_step_name_", 1)
        assert all(series.samples[i][:2] == (named, labels) for series in per_step.values())


async def test_an_idle_queue_reads_0_not_no_data(api_any: Api) -> None:
    """A queue the store knows of (its workflows registered by a worker, or a queue
    limit) with no queued run has ``tether_queue_depth`` 0 and an oldest age of 0: the
    series were left out of the scrape, so when every queue was idle the family had no
    sample at all ("no data" on a dashboard, an absent() alert firing, and Prometheus
    marking each queue's series stale between bursts)."""
    api = api_any
    await api.app.set_queue_limit("paused", 0)
    async with api.app.worker(queues=["default"]):
        await api.http.post("/api/v1/runs", json={"workflow": "greet", "input": ["a"],
                                                  "run_id": "q1"})
        await wait_status(api, "q1", "completed")
    await api.http.post("/api/v1/runs", json={"workflow": "wait_go", "run_id": "q2",
                                              "queue": "busy"})
    families = parse((await api.http.get("/metrics")).text)
    depth = {labels["queue"]: v for _, labels, v in families["tether_queue_depth"].samples}
    age = {labels["queue"]: v
           for _, labels, v in families["tether_queue_oldest_age_seconds"].samples}
    assert depth == {"default": 0, "paused": 0, "busy": 1}, depth
    assert age["default"] == 0 and age["paused"] == 0 and age["busy"] >= 0


async def test_llm_calls_total_counts_the_calls_a_provider_answered(api_any: Api) -> None:
    """An LLM call refused once with a 429 and answered on its next attempt reached the
    provider twice and counts once in ``tether_llm_calls_total``: the figure counts the
    answers (the calls whose usage was priced). Its HELP said "LLM calls that reached a
    provider", which the refused attempt did too."""
    from tether.ai import LLM, user_message
    from tether.testing.llm_server import Fault, Reply, ScriptedLLMServer

    app = api_any.app
    async with ScriptedLLMServer(script=[
            Fault.rate_limit(retry_after=0.01),
            Reply("hi", input_tokens=5, output_tokens=1)]) as server:
        llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="sk-test")

        @app.workflow
        async def asks() -> str:
            return (await llm.chat([user_message("hello")])).text or ""

        async with app.worker():
            assert await (await app.start(asks, run_id="llm-1")).result(timeout=30) == "hi"
        await llm.aclose()  # (its pooled connection, else warned of in a later test)
        assert len(server.requests) == 2
    families = parse((await api_any.http.get("/metrics")).text)
    fam = families["tether_llm_calls_total"]
    assert [value for _, _, value in fam.samples] == [1]
    assert fam.help is not None and "answered" in fam.help and "reached" not in fam.help, \
        fam.help
