"""``docs/getting-started.md`` as a new user follows it: its files written as it says
(``Save this as``, ``Add to``), its shell commands run in order by one ``bash`` in an
empty folder, against the installed package: real ``tether worker`` processes killed
with ``kill -9``, the real CLI, SQLite, and the scripted LLM server on loopback. Then
what the guide says the user sees is checked in each command's output.

Only the installation is not repeated: ``python3 -m venv .venv`` becomes a link to
this interpreter's environment (where Tether is installed) and ``pip install`` is left
out; the guide's ``export PATH`` then finds ``tether`` and ``python`` in it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "getting-started.md"
#: Printed between two shell blocks, to cut the output into each block's.
MARK = "=== getting-started block {} ==="
#: The lines of the install block that a test does not repeat, and what it runs instead.
INSTALL = {
    "python3 -m venv .venv": f"ln -s {sys.prefix} .venv",
    '.venv/bin/pip install -q -e "/path/to/tether[llm]"    # the folder of your checkout': "",
}


def blocks() -> list[tuple[str, str, str]]:
    """The guide's fenced blocks in order: (language, the prose before it, its text)."""
    found = []
    last = 0
    text = GUIDE.read_text()
    for m in re.finditer(r"```(\w+)\n(.*?)```", text, flags=re.S):
        found.append((m.group(1), text[last:m.start()], m.group(2)))
        last = m.end()
    return found


def script() -> tuple[str, int]:
    """One bash script doing what the guide says, in order; and how many shell blocks it
    holds. A file block is written (or appended to) as the prose before it says."""
    lines = ["set -u"]
    shell = 0
    for lang, prose, body in blocks():
        if lang == "bash":
            for old, new in INSTALL.items():
                body = body.replace(old, new)
            lines += [f"echo '{MARK.format(shell)}'", body]
            shell += 1
            continue
        target = re.findall(r"(Save (?:this|the \w+|its script)\s+as|Add\s+to)\s+`([^`]+)`",
                            prose)
        assert target, f"a {lang} block that the guide does not say where to save:\n{body}"
        verb, name = target[-1]
        redirect = ">>" if verb.startswith("Add") else ">"
        lines.append(f"cat {redirect} {name} <<'GETTING_STARTED_EOF'\n{body}"
                     "GETTING_STARTED_EOF")
    return "\n".join(lines) + "\n", shell


def test_the_guide_says_where_each_file_goes() -> None:
    body, shell = script()
    assert shell == 8
    for old in INSTALL:
        assert old in GUIDE.read_text(), f"the install block changed: {old!r}"
    for name in ("tour.py", "agent.py", "script.json"):
        assert f"> {name} <<" in body
    assert ">> tour.py <<" in body


def pages(log: str) -> list[tuple[int, int]]:
    """(page, attempt) of each page a worker's log says it fetched."""
    return [(int(n), int(a)) for n, a in re.findall(r"fetched page (\d+) \(attempt (\d+)\)",
                                                    log)]


def journal(shown: str) -> list[list[str]]:
    """The cells of the journal table ``tether show`` prints (after its heading, up to
    the blank line that ends it)."""
    lines = shown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("POS"))
    end = lines.index("", start)
    return [line.split() for line in lines[start + 1:end]]


@pytest.mark.slow
def test_the_getting_started_guide_works(tmp_path: Path) -> None:
    body, shell = script()
    (tmp_path / "guide.sh").write_text(body)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TETHER_DATABASE_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY",
                        "VIRTUAL_ENV") and not k.startswith("PYTEST")}
    # Its own session: whatever the guide leaves running is ended with it.
    proc = subprocess.Popen(["bash", "guide.sh"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    # bash says "guide.sh: line N: PID Killed  tether worker ..." once it reaps a worker
    # the guide killed with -9: wherever it has got to then (the next block's output,
    # under load), so those lines are taken out first.
    out = re.sub(r"(?m)^.* Killed +tether worker .*\n", "", out)
    parts = re.split(r"=== getting-started block \d+ ===\n", out)[1:]
    assert len(parts) == shell, out
    install, crash, recover, stop, wait, approve, agent, cleanup = parts
    tour = tmp_path / "tether-tour"

    # 1. `tether --help` answers.
    assert "usage: tether" in install and "worker" in install, install

    # 2. The first worker fetched the first pages and died during the next one ("pages 1
    # to 3"); the second fetched only the rest, the page in flight again: every page
    # once, but for that one. (Which page the kill lands on depends on the machine.)
    first = pages(crash)
    assert first == pages((tour / "worker1.log").read_text())
    done = len(first)
    assert 1 <= done <= 5 and first == [(n, 1) for n in range(1, done + 1)], crash
    log2 = (tour / "worker2.log").read_text()
    second = pages(log2)
    assert second == pages(recover)
    # The new worker, on the same host, saw the killed one gone: its run at once (the
    # line said "1 of its runs are claimable now" until 2026-12-06).
    # (the line names the worker that wrote it, as each of its lines does)
    assert re.search(r"INFO tether\.worker: worker \S+ is gone; 1 of its runs is claimable "
                     r"now \[worker=\S+\]\n", log2), log2
    if second[0][1] == 2:  # the page in flight, fetched again: the attempt that died counts
        assert second == [(done + 1, 2)] + [(n, 1) for n in range(done + 2, 7)], second
    else:  # (the kill fell between two pages)
        assert second == [(n, 1) for n in range(done + 1, 7)], second
    result, shown = recover.split("\n]\n", 1)
    assert json.loads(result + "\n]") == [f"contents of page {n}" for n in range(1, 7)]
    assert [(c[1], c[2], c[3]) for c in journal(shown)] == [("step", "fetch", "ok")] * 6
    if second[0][1] == 2:  # "under attempts, page 4's first attempt is interrupted"
        assert re.search(rf"\n +{done}  fetch +#1 +interrupted ", shown), shown
    assert "status completed" in shown
    assert stop == ""

    # 3. The run waits, released; the signal ends it.
    started, heading, *listed = wait.splitlines()
    assert started == "post-1" and heading.split()[:2] == ["RUN", "ID"], wait
    assert [line.split()[:4] for line in listed] == [
        ["post-1", "publish", "default", "waiting"]], wait
    assert listed[0].endswith(" signal review"), wait  # the WAITING FOR column
    assert approve.splitlines() == [
        "post-1: signal 'review' sent",
        '"Durable agents: published (18 characters), approved by ana"'], approve

    # 4. The model's first reply and the tool came back from the journal: the tool ran
    # once, on the first worker; the unanswered turn was asked again.
    started, answer, *counts_and_show = agent.splitlines()
    assert started == "agent-1" and answer == '"The sentence has 4 words."', agent
    assert counts_and_show[:2] == ["worker4.log:1", "worker5.log:0"], agent
    shown = "\n".join(counts_and_show[2:])
    assert [c[2] for c in journal(shown)] == [
        "llm:openai:gpt-4.1-mini", "counter.tool:word_count", "llm:openai:gpt-4.1-mini"]
    assert re.search(r"saved by replay:\s+1 call, 120 input \+ 20 output tokens", shown), shown
    assert re.search(r"LLM spent:\s+2 calls, 280 input \+ 30 output tokens", shown), shown
    assert cleanup == "", cleanup
