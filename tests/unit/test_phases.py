"""The lifecycle table and the Machine built from it: every legal move, illegal ones refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from lima.states.machine import IllegalTransition, Lifecycle
from lima.states.phases import TRANSITIONS, Phase, render_mermaid, transition

P = Phase
# Written out by hand from DESIGN.md section 3, not derived from TRANSITIONS: a change to
# the table that changes one of these moves must change this specification too.
SPEC_LEGAL = [
    ("create", P.ABSENT, P.CREATED),
    ("create", P.FAILED, P.CREATED),  # a failed create is retried in place
    ("build_cidata", P.CREATED, P.CIDATA_BUILT),
    ("build_cidata", P.STOPPED, P.CIDATA_BUILT),  # every boot gets a new instance-id
    ("build_cidata", P.CIDATA_BUILT, P.CIDATA_BUILT),
    ("boot", P.CIDATA_BUILT, P.BOOTING),
    ("ssh_up", P.BOOTING, P.SSH_READY),
    ("provisioned", P.SSH_READY, P.PROVISIONED),
    ("ready", P.PROVISIONED, P.RUNNING),
    ("stop", P.BOOTING, P.STOPPING),
    ("stop", P.RUNNING, P.STOPPING),
    ("halted", P.STOPPING, P.STOPPED),
    ("crashed", P.RUNNING, P.STOPPED),
    ("crashed", P.BOOTING, P.STOPPED),
    ("fail", P.ABSENT, P.FAILED),
    ("fail", P.RUNNING, P.FAILED),
    ("delete", P.STOPPED, P.ABSENT),
    ("delete", P.FAILED, P.ABSENT),
]
SPEC_ILLEGAL = [
    ("boot", P.ABSENT),  # nothing to boot
    ("boot", P.STOPPED),  # a boot needs a fresh cidata first
    ("boot", P.RUNNING),  # one qemu per instance
    ("ready", P.BOOTING),  # no skipping ssh and provisioning
    ("provisioned", P.BOOTING),
    ("delete", P.RUNNING),  # stop first
    ("delete", P.STOPPING),
    ("create", P.RUNNING),
    ("crashed", P.STOPPED),  # only a live boot can crash
    ("halted", P.RUNNING),  # halted follows a stop
    ("stop", P.STOPPED),
]
del P


@pytest.mark.parametrize(("trigger", "source", "dest"), SPEC_LEGAL)
def test_legal_moves(trigger: str, source: Phase, dest: Phase) -> None:
    lc = Lifecycle(source, since=1.0)
    assert lc.fire(trigger, now=5.0) is dest
    assert lc.phase is dest
    assert lc.since == 5.0
    assert lc.history == [(trigger, source, dest)]


@pytest.mark.parametrize(("trigger", "source"), SPEC_ILLEGAL)
def test_illegal_moves_are_refused(trigger: str, source: Phase) -> None:
    lc = Lifecycle(source, since=1.0)
    assert not lc.can(trigger)
    with pytest.raises(IllegalTransition) as exc:
        lc.fire(trigger, now=5.0)
    assert lc.phase is source and lc.since == 1.0
    assert f"cannot '{trigger}' from phase '{source.value}'" in str(exc.value)


def test_happy_path_of_design_section_3() -> None:
    lc = Lifecycle(Phase.ABSENT)
    path = ["create", "build_cidata", "boot", "ssh_up", "provisioned", "ready", "stop", "halted"]
    for i, trig in enumerate(path):
        lc.fire(trig, now=float(i))
    assert lc.phase is Phase.STOPPED
    assert lc.fire("build_cidata", 10.0) is Phase.CIDATA_BUILT  # restart with a new IID
    assert [h[2] for h in lc.history][:6] == [
        Phase.CREATED, Phase.CIDATA_BUILT, Phase.BOOTING, Phase.SSH_READY,
        Phase.PROVISIONED, Phase.RUNNING,
    ]


def test_fail_from_everywhere_and_crash_only_from_live() -> None:
    assert set(transition("fail").sources) == set(Phase)
    assert set(transition("crashed").sources) == {
        Phase.BOOTING, Phase.SSH_READY, Phase.PROVISIONED, Phase.RUNNING,
        Phase.SUSPENDING, Phase.RESUMING,
    }


def test_suspend_resume_path() -> None:
    lc = Lifecycle(Phase.RUNNING)
    for i, trig in enumerate(["suspend", "saved", "resume", "resumed", "ready"]):
        lc.fire(trig, now=float(i))
    assert lc.phase is Phase.RUNNING
    assert [h[2] for h in lc.history] == [
        Phase.SUSPENDING, Phase.SUSPENDED, Phase.RESUMING, Phase.PROVISIONED, Phase.RUNNING]
    stale = Lifecycle(Phase.SUSPENDED)
    assert stale.fire("discard", 0.0) is Phase.STOPPED  # then a cold boot
    with pytest.raises(IllegalTransition):
        Lifecycle(Phase.STOPPED).fire("resume", 0.0)  # nothing saved: nothing to resume


def test_unknown_trigger() -> None:
    with pytest.raises(IllegalTransition):
        Lifecycle(Phase.ABSENT).fire("explode", 0.0)
    with pytest.raises(KeyError):
        transition("explode")


def test_adopt_is_recorded() -> None:
    lc = Lifecycle(Phase.RUNNING, since=1.0)
    lc.adopt(Phase.CREATED, now=3.0)
    assert lc.phase is Phase.CREATED and lc.since == 3.0
    assert lc.history == [("adopt", Phase.RUNNING, Phase.CREATED)]
    assert lc.fire("build_cidata", 4.0) is Phase.CIDATA_BUILT


def test_docs_lifecycle_is_current() -> None:
    """docs/lifecycle.md is generated from the table; regenerate it when this fails:
    python -c 'import lima.states.phases as p; print(p.render_mermaid(), end="")' \
        > docs/lifecycle.md
    """
    doc = Path(__file__).resolve().parents[2] / "docs" / "lifecycle.md"
    assert doc.read_text(encoding="utf-8") == render_mermaid(), "docs/lifecycle.md is stale"


def test_diagram_has_every_edge() -> None:
    text = render_mermaid()
    # The diagram against the table it is drawn from (the table itself is checked above).
    for trig, src, dest in [(t.trigger, s, t.dest) for t in TRANSITIONS for s in t.sources]:
        if trig != "fail":
            assert f"{src.value} --> {dest.value}: {trig}" in text
    assert "any --> failed: fail" in text
