"""The examples of README.md and the docs pages other than the getting-started guide
and the two integration pages (their own tests run those), checked as a new user
would meet them.

- Every ``tether ...`` command line of a shell block (and a systemd unit's
  ``ExecStart``) is one the CLI accepts: its command and flags parse.
- Every import of a Python block names a module and a name that exist, and every
  ``tether.X``, ``app.X`` and ``ext.X`` it uses is there.
- The complete examples, marked in the markdown with ``<!-- example: NAME -->`` before
  the block (a comment: the rendered page does not show it), run as written: saved as
  the file their first line names, in an empty folder, against SQLite, with real
  ``tether worker`` processes and the real CLI, the model being the scripted LLM
  server on loopback (``OPENAI_BASE_URL``), as the getting-started guide does.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import contextlib
import importlib
import io
import json
import os
import re
import shlex
import subprocess
import symtable
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tether
import tether.ext
from tests import forked
from tests.ai.test_mcp import stop_process
from tether.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
#: The pages whose examples this file checks.
PAGES = ["README.md"] + [f"docs/{name}.md" for name in (
    "agents", "llm", "ai-providers", "tools-and-mcp", "lifecycle", "testing", "telemetry",
    "mcp-server", "serve", "operations", "concepts", "extending", "postgres", "limits",
    "reliability", "index")]
#: The integration pages, whose complete examples tests/docs/test_integration_examples.py
#: runs: their other marked blocks are looked up here too.
INTEGRATION_PAGES = ["docs/integrations-openai-agents.md", "docs/integrations-pydantic-ai.md"]
FENCE = re.compile(r"^(?:<!-- example: ([\w-]+) -->\n)?```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(page: str) -> Iterator[tuple[str | None, str, str]]:
    """(example name or None, language, text) of each fenced block of a page."""
    for m in FENCE.finditer((ROOT / page).read_text()):
        yield m.group(1), m.group(2), m.group(3)


def example(name: str) -> str:
    """The text of the block marked ``<!-- example: NAME -->``."""
    found = [text for page in PAGES + INTEGRATION_PAGES for mark, _, text in blocks(page)
             if mark == name]
    assert len(found) == 1, f"example {name!r}: {len(found)} blocks marked so"
    return found[0]


def command_lines() -> list[tuple[str, str]]:
    """(page, line) of each ``tether`` command of the pages' shell blocks and units:
    continuation lines joined, ``a ; b`` split, a trailing ``&`` dropped."""
    found = []
    for page in PAGES:
        for _, lang, text in blocks(page):
            if lang == "yaml":  # a container's command, a JSON list
                found += [(page, shlex.join(json.loads(command))) for command in
                          re.findall(r"command: (\[.*?\])", text, flags=re.S)]
            if lang not in ("bash", "ini", ""):
                continue
            for line in text.replace("\\\n", " ").splitlines():
                line = re.sub(r"^ExecStart=\S*/tether ", "tether ", line)
                for part in line.split(" ; "):
                    part = part.strip().removesuffix("&").strip()
                    if part.startswith("tether "):
                        found.append((page, part))
    return found


def test_every_tether_command_shown_is_one_the_cli_accepts() -> None:
    lines = command_lines()
    assert len(lines) > 40
    refused = []
    for page, line in lines:
        argv = shlex.split(line.split(" > ")[0], comments=True)[1:]
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                build_parser().parse_args(argv)
        except SystemExit as exc:
            if exc.code:
                refused.append(f"{page}: {line}\n  {err.getvalue().strip()}")
    assert not refused, "\n".join(refused)


def test_no_page_holds_a_merge_conflict_marker() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    marked = [f"{page.relative_to(ROOT)}:{n}: {line}" for page in pages
              for n, line in enumerate(page.read_text().splitlines(), 1)
              if re.match(r"(<{7}|>{7}) |={7}$", line)]
    assert not marked, "\n".join(marked)


def anchors(page: Path) -> set[str]:
    """The ids mkdocs gives a page's headings (its toc slugs, a repeated one numbered
    ``_1``, ``_2``), and those of the page's own ``<a id=...>``."""
    from markdown.extensions.toc import slugify

    found: set[str] = set()
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    for line in text.splitlines():
        found.update(re.findall(r"<a (?:id|name)=\"([^\"]+)\"", line))
        heading = re.match(r"#{1,6} +(.*?)[ #]*$", line)
        if heading:
            title = re.sub(r"\[([^]]*)\]\([^)]*\)", r"\1", heading.group(1)).replace("`", "")
            slug = slug0 = slugify(title, "-")
            n = 0
            while slug in found:
                n += 1
                slug = f"{slug0}_{n}"
            found.add(slug)
    return found


def test_every_relative_link_names_a_file_and_heading_that_exist() -> None:
    """Each ``[text](path#anchor)`` of README.md and docs/*.md outside code names a file
    of the repository and, in a page, one of its headings; none leaves the repository's
    own tree."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) > 20
    broken, checked = [], 0
    for page in pages:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
        text = re.sub(r"`[^`\n]*`", "", text)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            checked += 1
            path, _, fragment = target.partition("#")
            where = (page.parent / path).resolve() if path else page
            if not where.is_relative_to(ROOT):
                broken.append(f"{page.name}: {target} (outside the repository)")
            elif not where.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif fragment and where.suffix == ".md" and fragment not in anchors(where):
                broken.append(f"{page.name}: {target} (no such heading in {where.name})")
    assert checked > 100
    assert not broken, "\n".join(broken)


def python_blocks() -> Iterator[tuple[str, str]]:
    for page in PAGES:
        for _, lang, text in blocks(page):
            if lang == "python":
                yield page, text


def test_every_name_a_python_example_imports_or_uses_exists() -> None:
    missing = []
    bases: dict[str, Any] = {"tether": tether, "app": tether.App, "ext": tether.ext}
    count = 0
    for page, text in python_blocks():
        count += 1
        tree = compile(text, page, "exec",
                       flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if importlib.util.find_spec(alias.name) is None:
                        missing.append(f"{page}: import {alias.name}")
            elif isinstance(node, ast.ImportFrom) and node.module:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name) and importlib.util.find_spec(
                            f"{node.module}.{alias.name}") is None:
                        missing.append(f"{page}: from {node.module} import {alias.name}")
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id in bases):
                base = bases[node.value.id]
                if not hasattr(base, node.attr) and importlib.util.find_spec(
                        f"{getattr(base, '__name__', '')}.{node.attr}") is None:
                    missing.append(f"{page}: {node.value.id}.{node.attr}")
    assert count > 20
    assert not missing, "\n".join(missing)


def undefined_names(text: str) -> set[str]:
    """The names a block reads that it neither defines nor imports, and that are not
    builtins: what a user who copies the block alone meets as a ``NameError``, at once
    or when a function of it is called."""
    top = symtable.symtable(text, "example", "exec")
    known = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    known |= set(dir(builtins))
    missing: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        for s in table.get_symbols():
            if (s.is_referenced() and (table is top or s.is_global())
                    and s.get_name() not in known):
                missing.add(s.get_name())
        for child in table.get_children():
            walk(child)

    walk(top)
    return missing


#: The examples a user copies whole into a file, each (or, in a list, several in the
#: order the page gives them: one file) to run as it is.
WHOLE = ["readme-quickstart", "readme-agent", "llm-research", "agents-researcher",
         "tools-function", "tools-idempotency", ["tools-mcp", "tools-mcp-context"],
         "operations-version", "operations-schedules", "operations-retention",
         "operations-patch", "providers-clients", "providers-prices", "providers-scripted",
         "mcp-expose", "telemetry-otel", "ext-step", "ext-payload-hook", "agents-refunds",
         "agents-guardrail", "pydantic-ai-labels", "pydantic-ai-delegation",
         "pydantic-ai-approval"]


@pytest.mark.parametrize("names", WHOLE, ids=str)
def test_a_whole_example_defines_or_imports_every_name_it_uses(names: str | list[str]
                                                               ) -> None:
    text = "\n".join(example(name) for name in ([names] if isinstance(names, str)
                                                else names))
    assert not undefined_names(text)


def test_the_function_tool_example_gives_the_schema_and_the_error_the_page_shows() -> None:
    from tether.ai import ToolArgumentError

    namespace: dict[str, Any] = {}
    exec(compile(example("tools-function"), "tools-function", "exec"), namespace)
    search = namespace["search"]
    spec = search.spec()
    assert spec["description"] == "Search the catalogue."
    properties = spec["parameters"]["properties"]
    assert properties["mode"]["enum"] == ["fast", "deep"]
    assert properties["limit"]["description"] == "at most this many hits."
    page = " ".join((ROOT / "docs" / "tools-and-mcp.md").read_text().split())
    quoted = re.search(r"written for the model: `([^`]+)`", page)
    assert quoted, "the page no longer quotes the error"
    with pytest.raises(ToolArgumentError) as raised:
        asyncio.run(search.invoke({"query": "tides", "limit": "ten", "sort": "new"}))
    assert str(raised.value) == quoted.group(1)


def test_the_mcp_examples_build_their_toolsets_and_agent(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    pytest.importorskip("mcp")
    monkeypatch.chdir(tmp_path)  # (their App() would open ./tether.db when used)
    namespace: dict[str, Any] = {}
    text = example("tools-mcp") + "\n" + example("tools-mcp-context")
    exec(compile(text, "tools-mcp", "exec"), namespace)
    assert namespace["weather"].id == "weather" and namespace["library"] is not None


def test_the_lifecycle_sketch_leaves_undefined_only_what_it_says_is_yours() -> None:
    """The months-long session imports what Tether gives; the rest its sentence names."""
    assert undefined_names(example("lifecycle-session")) == {
        "app", "llm", "PROMPT", "post_to_chat", "summarize", "summary_of"}


def test_the_operations_examples_build_the_apps_they_describe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run as saved, each builds its app: the version read from the environment, the
    two schedules, the three retention policies."""
    monkeypatch.chdir(tmp_path)  # (their App() would open ./tether.db when used)
    monkeypatch.setenv("TETHER_VERSION", "2026-12-02")
    ran: dict[str, dict[str, Any]] = {}
    for name in ("operations-version", "operations-schedules", "operations-retention"):
        ran[name] = {}
        exec(compile(example(name), name, "exec"), ran[name])
    assert ran["operations-version"]["app"].version == "2026-12-02"
    assert set(ran["operations-schedules"]["app"]._schedules) == {"morning_digest",
                                                                  "crm-eu"}
    workflows = ran["operations-retention"]["app"].workflows()
    assert workflows["chat"].retention.older_than == 7 * 86400
    assert workflows["approvals"].retention == "forever"
    assert workflows["support"].retention.statuses == ("completed",)


@pytest.mark.slow
def test_the_patch_example_adds_then_retires_its_patch(tmp_path: Path) -> None:
    """operations.md's patch, walked as the page says: its file saved, its shell blocks
    run in order by one ``bash`` (a real worker, the real CLI, SQLite), the file changed
    between them as the page's steps 1 and 2 say; each command answers as its comment
    says."""
    save(tmp_path, "operations-patch")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tether").write_text(f'#!/bin/sh\nexec {sys.executable} -m tether "$@"\n')
    (bin_dir / "tether").chmod(0o755)
    source = tmp_path / "pipeline.py"
    patched = ('    if tether.patched("add-enrich"):      # new runs, and old ones that had '
               'not got here\n        out.append(await enrich(x))\n')
    # Step 1's lines, as the page gives them (indented under its list item).
    step1 = re.search(r"\n   ```python\n(   out = .*?\n)   ```\n",
                      (ROOT / "docs" / "operations.md").read_text(), flags=re.S)
    assert step1, "the page no longer gives step 1's lines"
    retired = "".join(" " + line + "\n" for line in step1.group(1).splitlines()[1:])
    assert patched in source.read_text() and "deprecate_patch" in retired
    # Between the blocks, the file is changed as each step says.
    edits = ["",
             f"{sys.executable} - <<'EOF'\nfrom pathlib import Path\n"
             f"p = Path('pipeline.py')\n"
             f"p.write_text(p.read_text().replace({patched!r}, {retired!r}))\nEOF",
             "sed -i '/deprecate_patch/d' pipeline.py"]
    mark = "=== operations-patch block ==="
    parts = []
    for edit, name in zip(edits, ("operations-patch-start", "operations-patch-retire",
                                  "operations-patch-delete"), strict=True):
        parts += [edit, f"echo '{mark}'", example(name), "echo \"exit $?\""]
    (tmp_path / "walk.sh").write_text("set -u\n" + "\n".join(parts) + "\n")
    env = {**user_env(), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.Popen(["bash", "walk.sh"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()
    start, retire, delete = out.split(mark + "\n")[1:]
    journal = [line.split()[:4] for line in start.splitlines()
               if re.match(r" +\d+  ", line)]
    assert journal == [["0", "step", "fetch", "ok"], ["1", "patch", "add-enrich", "ok"],
                       ["2", "step", "enrich", "ok"]], start
    assert "ok       p-1 pipeline: compatible" in retire, retire
    assert json.loads(retire[retire.index("["):retire.rindex("]") + 1]) == [
        "page a", "enriched a", "notified a"], retire
    assert "deprecate_patch" not in source.read_text()
    assert "no runs to check" in delete.lower() and "MISMATCH p-1 pipeline: position 1" in delete
    assert delete.rstrip().endswith("exit 1"), delete


def test_the_price_example_costs_what_its_comment_says() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(example("providers-prices"), "providers-prices", "exec"), namespace)
    comment = re.search(r"# ([\d.]+): dated names", example("providers-prices"))
    assert comment, "the page no longer gives the cost"
    prices, usage = namespace["prices"], namespace["usage"]
    assert prices.cost("gpt-4.1-mini-2025-04-14", usage) == float(comment.group(1))
    assert prices.price("llama3.1:8b").known is False


def test_the_mcp_server_exposing_example_serves_the_tools_it_names() -> None:
    pytest.importorskip("mcp")
    from tether.serve.mcp import TetherTasks

    namespace: dict[str, Any] = {}
    exec(compile(example("mcp-expose"), "mcp-expose", "exec"), namespace)
    # quote and research by mcp=, the agent by add_agent(mcp=True), summarize by
    # expose_mcp; a workflow left out of all three would be no tool.
    assert sorted(TetherTasks(namespace["app"]).tools) == [
        "quote", "research", "summarize", "travel"]


async def test_the_ext_step_example_is_one_journaled_step(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(example("ext-step"), "ext-step", "exec"), namespace)
    search = namespace["search"]

    class Client:  # the user's live client: a plain object the step closes over
        calls = 0

        async def search(self, q: str) -> list[str]:
            Client.calls += 1
            return [q.upper()]

    client = Client()
    app = tether.App(f"sqlite:///{tmp_path / 'ext.db'}")

    @app.workflow
    async def find(q: str) -> list[str]:
        return await search(client, q)

    try:
        async with app.worker():
            handle = await app.start(find, "tides")
            assert await handle.result(timeout=60) == ["TIDES"]
        run = await app.get_run(handle.run_id)
    finally:
        await app.close()
    assert [(e["kind"], e["name"]) for e in run.journal] == [("step", "acme:search")]
    assert Client.calls == 1


@pytest.mark.slow
def test_the_telemetry_example_exports_a_runs_spans(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk")
    (tmp_path / "otel_setup.py").write_text(example("telemetry-otel"))
    (tmp_path / "run.py").write_text(
        "import asyncio, otel_setup, tether\n"
        "app = tether.App('sqlite:///./tether.db')\n"
        "@app.step\n"
        "async def one() -> int: return 1\n"
        "@app.workflow\n"
        "async def wf() -> int: return await one()\n"
        "async def main():\n"
        "    async with app.worker():\n"
        "        print(await (await app.start(wf)).result(timeout=60))\n"
        "    await app.close()\n"
        "asyncio.run(main())\n")
    ran = forked.run([sys.executable, "run.py"], cwd=tmp_path, env=user_env(),
                     capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    names = re.findall(r'"name": "([^"]+)"', ran.stdout)
    assert {"start wf", "run wf", "step one"} <= set(names), ran.stdout


# -- the complete examples, run ---------------------------------------------------


def save(folder: Path, name: str) -> str:
    """Write the example into ``folder`` under the file name its first line gives."""
    text = example(name)
    first = re.match(r"# ([\w.]+\.py)\b", text)
    assert first, f"example {name!r} does not say its file name on its first line"
    (folder / first.group(1)).write_text(text)
    return first.group(1)


def user_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TETHER_DATABASE_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY")
           and not k.startswith("PYTEST")}
    return {**env, "PYTHONPATH": str(ROOT / "src"), **extra}


async def shell(line: str, cwd: Path, env: dict[str, str]
                ) -> subprocess.CompletedProcess[str]:
    """One command line of a page, ``tether`` being this checkout's CLI. In a thread:
    a scripted server on this event loop answers meanwhile."""
    argv = shlex.split(line, comments=True)
    assert argv[0] == "tether", line
    return await asyncio.to_thread(
        forked.run, [sys.executable, "-m", "tether", *argv[1:]], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=120)


@contextlib.contextmanager
def worker(target: str, cwd: Path, env: dict[str, str], *args: str) -> Iterator[Path]:
    log = cwd / "worker.log"
    with open(log, "wb") as out:
        proc = forked.Popen([sys.executable, "-m", "tether", "worker", target, *args],
                            cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield log
    finally:
        stop_process(proc)


@pytest.mark.slow
async def test_readme_quickstart_runs_as_a_program_and_from_the_shell(tmp_path: Path) -> None:
    name = save(tmp_path, "readme-quickstart")
    env = user_env()
    # Run twice: its start is idempotent, and so is its signal (a second program
    # found r-1 ended, and its signal raised SignalError).
    for _ in range(2):
        ran = await asyncio.to_thread(forked.run, [sys.executable, name], cwd=tmp_path,
                                      env=env, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == ("{'topic': 'durable execution', 'hits': None, "
                              "'approved_by': 'ana'}\n")
        # It closes its app: the store is one file, no -wal or -shm left behind (the
        # program never closed it, and both stayed).
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("tether.db")
                      ) == ["tether.db"]

    # The shell block, on a store of its own, with the worker its first line starts.
    for name in ("tether.db", "tether.db-wal", "tether.db-shm"):  # (a stale WAL of the
        (tmp_path / name).unlink(missing_ok=True)  # first store would meet the new one)
    lines = [line for line in example("readme-cli").splitlines() if line.strip()]
    assert lines[0] == "tether worker myapp:app --queue default --concurrency 50"
    _, *target_and_flags = shlex.split(lines[0])
    out: dict[str, subprocess.CompletedProcess[str]] = {}
    with worker(target_and_flags[1], tmp_path, env, *target_and_flags[2:]):
        for line in lines[1:]:
            for part in line.split(" ; "):
                out[shlex.split(part, comments=True)[1]] = await shell(part, tmp_path, env)
    for command in ("start", "signal", "runs", "show", "result", "fork", "schedules",
                    "purge", "--version"):
        assert out[command].returncode == 0, (command, out[command].stderr)
    assert out["start"].stdout == "r-1\n"
    assert json.loads(out["result"].stdout) == {"topic": "durable execution", "hits": None,
                                                "approved_by": "ana"}
    assert "status completed" in out["show"].stdout
    # The fork waits for its own approval and holds a copy of r-1's data: erasing r-1
    # is refused until it ends, in one line that names it.
    assert out["erase"].returncode == 1
    assert out["fork"].stdout.strip() in out["erase"].stderr, out["erase"].stderr
    # The run completed: the commands for other states say why not, in one line.
    assert out["fork"].stdout.strip() and out["fork"].stdout.strip() != "r-1"  # its new id
    for command in ("cancel", "resume", "retry"):
        assert out[command].returncode == 1, (command, out[command].stderr)
        assert out[command].stderr.startswith("tether: error: run 'r-1'"), out[command].stderr
    # No workflow of the quickstart is marked mcp=True: `tether mcp` says so.
    assert out["mcp"].returncode == 1 and "mcp=True" in out["mcp"].stderr


@pytest.mark.slow
async def test_readme_agent_waits_for_approval_and_answers(tmp_path: Path) -> None:
    from tether.testing import Reply, ScriptedLLMServer

    save(tmp_path, "readme-agent")
    lines = [line for line in example("readme-agent-cli").splitlines() if line.strip()]
    start, approvals, reject, budget, show = lines
    async with ScriptedLLMServer([
        Reply(tool_calls=[{"name": "buy_report",
                           "arguments": {"title": "Engines 2026", "price_usd": 450}}]),
        Reply("Without the report: Tether."),
    ]) as server:
        env = user_env(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="test-key")
        with worker("myapp:app", tmp_path, env):
            started = await shell(start, tmp_path, env)
            assert started.returncode == 0, started.stderr
            run_id = started.stdout.strip()
            for _ in range(600):
                listed = await shell(approvals, tmp_path, env)
                if run_id in listed.stdout:
                    break
            assert "buy_report" in listed.stdout and "Engines 2026" in listed.stdout
            rejected = await shell(reject.replace("RUN_ID", run_id), tmp_path, env)
            assert rejected.returncode == 0, rejected.stderr
            assert "rejected buy_report" in rejected.stdout
            result = await shell(f"tether result {run_id} --wait 60", tmp_path, env)
            assert json.loads(result.stdout) == "Without the report: Tether."
            # The run does not wait for a budget: raising it is refused, in one line.
            raised = await shell(budget.replace("RUN_ID", run_id), tmp_path, env)
            assert raised.returncode == 1 and "has ended" in raised.stderr, raised.stderr
            shown = await shell(show.replace("RUN_ID", run_id), tmp_path, env)
    assert "LLM spent:        2 calls" in shown.stdout, shown.stdout
    assert '"note": "stay under $200"' in shown.stdout  # the answer, in the journal
    # The model read the note with the rejection.
    assert "stay under $200" in json.dumps(server.requests[1].body)


@pytest.mark.slow
async def test_llm_page_workflow_chats_then_streams(tmp_path: Path) -> None:
    from tether.testing import Reply, ScriptedLLMServer

    (tmp_path / "research.py").write_text(example("llm-research"))
    (tmp_path / "run.py").write_text(
        "import asyncio, research\n"
        "async def main():\n"
        "    async with research.app.worker():\n"
        "        handle = await research.app.start(research.research, 'tides')\n"
        "        print(await handle.result(timeout=60))\n"
        "asyncio.run(main())\n")
    async with ScriptedLLMServer([Reply("1. Moon 2. Sun"), Reply("Tides follow the moon.")
                                  ]) as server:
        env = user_env(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="test-key")
        ran = await asyncio.to_thread(forked.run, [sys.executable, "run.py"], cwd=tmp_path,
                                      env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "Tides follow the moon.\n"
    assert [r.body.get("stream") for r in server.requests] == [None, True]
    assert server.requests[0].last_user_text() == "Outline tides."


@pytest.mark.slow
async def test_mcp_server_page_client_books_after_approval(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    from tests.mcp_server import apps
    from tests.mcp_server.host import serve_http
    from tether.ai import LLM
    from tether.testing import Reply, ScriptedLLMServer

    name = save(tmp_path, "mcp-client")
    async with ScriptedLLMServer([
        Reply(tool_calls=[{"name": "book_flight", "arguments": {"destination": "Rome"}}]),
        Reply("Booked Rome."),
    ]) as server:
        async with LLM("openai:gpt-4.1-mini", base_url=server.base_url, breaker=None) as llm:
            app = apps.build(f"sqlite:///{tmp_path / 'served.db'}", llm=llm)
            async with serve_http(app) as url, app.worker():
                ran = await asyncio.to_thread(
                    forked.run, [sys.executable, name, url], cwd=tmp_path, env=user_env(),
                    capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "Booked Rome.\n"


@pytest.mark.slow
async def test_agents_page_researcher_uses_each_kind_of_tool(tmp_path: Path) -> None:
    """The agents page's first example, saved as the file it names, with the command
    lines under it: its MCP server (the demo's glossary, over stdio) answers, its
    workflow and agent tools run on their own queues, its purchase waits for approval."""
    pytest.importorskip("mcp")
    from tether.testing import Reply, ScriptedLLMServer

    name = save(tmp_path, "agents-researcher")
    assert name == "myapp.py"
    page = (ROOT / "docs" / "agents.md").read_text()
    worker_line, start, approvals, approve, result = [
        line for line in page.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()]
    assert worker_line.startswith("tether worker myapp:app ")
    async with ScriptedLLMServer([
        Reply(tool_calls=[{"name": "define", "arguments": {"term": "journal"}},
                          {"name": "search_web", "arguments": {"query": "durable"}},
                          {"name": "crawl", "arguments": {"url": "https://example.com"}},
                          {"name": "writer", "arguments": {"task": "Summarize it."}}]),
        Reply("A crisp summary."),  # the writer's answer
        Reply(tool_calls=[{"name": "buy_report",
                           "arguments": {"title": "Engines 2026", "price_usd": 150}}]),
        Reply("Adopt it."),
    ]) as server:
        # The MCP server's command is `python`: the one of the user's environment.
        env = user_env(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="test-key",
                       PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        with worker("myapp:app", tmp_path, env) as log:
            started = await shell(start, tmp_path, env)
            assert started.returncode == 0, started.stderr
            run_id = started.stdout.strip()
            for _ in range(600):
                listed = await shell(approvals, tmp_path, env)
                if run_id in listed.stdout:
                    break
            assert "buy_report" in listed.stdout, (listed.stdout, log.read_text())
            approved = await shell(approve.replace("RUN_ID", run_id), tmp_path, env)
            assert approved.returncode == 0, approved.stderr
            answer = await shell(result.replace("RUN_ID", run_id), tmp_path, env)
            assert answer.returncode == 0, (answer.stderr, log.read_text())
            shown = await shell(f"tether show {run_id} --json", tmp_path, env)
    assert "serving queues crawl,default,writers" in log.read_text()  # "serves default, ..."
    assert json.loads(answer.stdout) == "Adopt it."
    journal = json.loads(shown.stdout)["journal"]
    names = [entry["name"] for entry in journal]
    assert names[:2] == ["mcp:glossary.list_tools", "llm:openai:gpt-4.1-mini"], names
    assert "mcp:glossary.call_tool" in names and "researcher.tool:search_web" in names
    defined = next(e for e in journal if e["name"] == "mcp:glossary.call_tool")
    assert "The ordered record of a run's operations" in json.dumps(defined["result"])
