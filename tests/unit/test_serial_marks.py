"""scripts/test.sh's serial part collects only the test files that mark a test `serial`
(found with grep). That holds only while every `serial` mark is written in a test file:
one added by a conftest hook or a helper module would leave its test in neither part
(the parallel part deselects it, the serial part would not collect its file)."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_the_serial_mark_appears_only_in_test_files() -> None:
    elsewhere = [str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py")
                 if not p.name.startswith("test_")
                 and re.search(r"\bserial\b", p.read_text(encoding="utf-8"))]
    assert elsewhere == [], f"`serial` named outside a test file: {elsewhere}"


def test_the_script_finds_the_files_by_the_mark_they_use() -> None:
    marked = sorted(str(p.relative_to(TESTS)) for p in TESTS.rglob("test_*.py")
                    if "pytest.mark.serial" in p.read_text(encoding="utf-8"))
    assert marked, "no test is marked serial: scripts/test.sh's grep finds nothing"
    script = (TESTS.parent / "scripts" / "test.sh").read_text(encoding="utf-8")
    assert "mark\\.serial" in script
