"""The end of a resumable job's output (``fct_registry.commands._summary``)."""

from __future__ import annotations

import json

import pytest

from fct_registry.commands._summary import print_summary


@pytest.mark.parametrize("already_complete", [False, True])
def test_json_summary_whatever_the_state(already_complete: bool, capsys) -> None:
    summary = {"rows": 3, "already_complete": already_complete}
    assert print_summary(summary, True, "nothing to do") is True
    assert json.loads(capsys.readouterr().out) == summary


def test_already_complete_prints_one_line(capsys) -> None:
    assert print_summary({"already_complete": True}, False, "g already holds this") is True
    assert capsys.readouterr().out == "g already holds this\n"


def test_work_done_is_left_to_the_caller(capsys) -> None:
    assert print_summary({"already_complete": False}, False, "unused") is False
    assert capsys.readouterr().out == ""
