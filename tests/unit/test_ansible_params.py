"""`mode: ansible` on the host side, without running ansible: a param that only the playbook
uses is accepted (Lima reads the playbook for $PARAM_KEY too), and what a failed
ansible-playbook run leaves in the Degraded message."""

from __future__ import annotations

from pathlib import Path

from lima.drivers.postboot import ansible_failure
from tests.unit.test_rules import errors


def _doc(playbook: Path | str) -> str:
    return f"param:\n  COLOR: blue\nprovision:\n- mode: ansible\n  playbook: {playbook}\n"


def test_param_used_only_by_the_playbook_is_accepted(tmp_path: Path) -> None:
    book = tmp_path / "site.yml"
    book.write_text("- hosts: lima\n  tasks:\n  - raw: echo {{ lookup('env', 'PARAM_COLOR') }}\n")
    assert errors(_doc(book)) == []


def test_param_the_playbook_does_not_use_is_an_error(tmp_path: Path) -> None:
    book = tmp_path / "site.yml"
    book.write_text("- hosts: lima\n  tasks:\n  - raw: echo $PARAM_COLORS\n")
    (problem,) = errors(_doc(book))
    assert problem.path == "param.COLOR" and "is not used" in problem.message


def test_playbook_not_readable_from_here_may_use_any_param(tmp_path: Path) -> None:
    # e.g. a relative path stored in lima.yaml, loaded again from another directory
    assert errors(_doc(tmp_path / "missing.yml")) == []


def test_ansible_failure_prefers_the_failed_task_over_the_recap() -> None:
    stdout = (
        "PLAY [lima] ****\n\nTASK [fail on purpose] ****\n"
        'fatal: [an]: FAILED! => {"changed": true, "rc": 3}\n\n'
        "PLAY RECAP ****\nan : ok=0 changed=0 unreachable=0 failed=1\n"
    )
    assert ansible_failure(stdout, "") == 'fatal: [an]: FAILED! => {"changed": true, "rc": 3}'
    assert ansible_failure("", "ERROR! the playbook: site.yml could not be found\n") == (
        "ERROR! the playbook: site.yml could not be found")
    assert ansible_failure("a\nb\nc\nd\n", "") == "b | c | d"
