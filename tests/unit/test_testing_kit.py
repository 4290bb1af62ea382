"""Pure parts of the test kit: the virtual clock, where a stream fault cuts, the
history format's round trip and its checks."""

from __future__ import annotations

import pytest

from tether.errors import ConfigError
from tether.testing import History, HistoryError, Reply, VirtualClock, load_history
from tether.testing.llm_server._server import _cut_index


async def test_virtual_clock_moves_only_forward_and_only_when_told() -> None:
    clock = VirtualClock(100.0)
    assert clock.now() == 100.0 == clock.now()
    clock.advance(5)
    clock.set(200.0)
    await clock.sleep(30)
    assert clock.now() == 230.0
    # (a ConfigError, as for a NaN, since 2026-12-08: a bare ValueError before)
    with pytest.raises(ConfigError, match="forward only"):
        clock.set(10.0)
    with pytest.raises(ConfigError, match="forward only"):
        clock.advance(-1)


EVENTS = [("meta", "start"), ("content", "a"), ("content", "b"), ("content", "c"),
          ("meta", "stop"), ("meta", "done")]


@pytest.mark.parametrize(("after", "index"), [(None, None), (0, 1), (1, 2), (2, 3), (3, 4),
                                              (10, 4)])
def test_a_stream_fault_cuts_before_chunk_n_or_after_the_last(after: int | None,
                                                               index: int | None) -> None:
    assert _cut_index(EVENTS, after) == index


def test_a_stream_without_content_is_cut_after_its_first_event() -> None:
    assert _cut_index([("meta", "start"), ("meta", "stop")], 0) == 1


def test_reply_json_and_text_agree_on_equality() -> None:
    assert Reply(json=[1, 2]) == Reply("[1, 2]")


def test_history_round_trips_through_its_json_form() -> None:
    history = History(run_id="r1", workflow="wf", status="waiting",
                      input={"args": [1]}, created_at=1.0, updated_at=2.0,
                      journal=[{"position": 0, "kind": "step", "name": "s", "status": "ok",
                                "attempts": 1, "started_at": 1.0, "finished_at": 1.5,
                                "next_attempt_at": None, "args": [1], "result": {"x": 1},
                                "error": None}])
    again = load_history(history.to_dict())
    assert again.to_dict() == history.to_dict()
    assert load_history(history) is history


@pytest.mark.parametrize(("change", "message"), [
    ({"version": True}, "must be an integer"),
    ({"run_id": 5}, "\"run_id\" must be a string"),
    ({"created_at": "yesterday"}, "\"created_at\" must be a number or null"),
    ({"journal": [{"position": 0, "kind": "step", "name": "s", "status": "done"}]},
     "status 'done' is not one of ok, error, pending"),
])
def test_history_fields_are_checked(change: dict[str, object], message: str) -> None:
    data = {"format": "tether.history", "version": 1, "run_id": "r", "workflow": "w",
            "status": "completed", "journal": [], **change}
    with pytest.raises(HistoryError, match=message):
        load_history(data)
