"""RefAudit: refcount_t semantics, ref_tracker-style leak reports, saturation, policy, model test."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import memguard
from memguard import RefAudit, RefcountError


class Prop:
    pass


def acquire(ref: memguard.Ref) -> None:
    ref.inc()


def test_destructor_runs_once_when_the_count_reaches_zero() -> None:
    audit = RefAudit()
    destroyed: list[object] = []
    target = Prop()
    ref = audit.track(target, name="prop", initial=2, destructor=destroyed.append)
    assert ref.count == 2 and ref.label == f"prop@0x{id(target):x}"
    ref.inc()
    ref.dec()
    ref.dec()
    assert destroyed == [] and ref.count == 1
    ref.dec()
    assert destroyed == [target] and ref.count == 0 and ref.released and ref.target is None
    assert audit.check() == [] and audit.reports == []
    audit.close()


def test_underflow_is_reported_with_three_stacks_and_raises_by_default() -> None:
    audit = RefAudit()
    ref = audit.track(0x5000, name="buf")
    ref.dec()
    with pytest.raises(RefcountError, match="underflow; use-after-free") as info:
        ref.dec()
    report = info.value.report
    assert report.kind == "refcount-underflow" and report.address == 0x5000
    assert "buf@0x5000" in report.message
    assert report.alloc_stack[0].name == "test_underflow_is_reported_with_three_stacks_and_raises_by_default"
    assert report.free_stack and report.stack and report.stack[0].lineno == report.free_stack[0].lineno + 2
    assert audit.reports == [report]
    audit.close()


def test_addition_on_zero_is_use_after_release() -> None:
    audit = RefAudit(on_error="report")
    ref = audit.track("session")
    ref.dec()
    ref.inc()
    (report,) = audit.reports
    assert report.kind == "refcount-use-after-release"
    assert "addition on 0; use-after-free" in report.message
    assert ref.count == 0 and ref.saturated
    audit.close()


def test_saturation_never_wraps_into_a_second_destruction() -> None:
    audit = RefAudit(on_error="report")
    destroyed: list[object] = []
    ref = audit.track("x", destructor=destroyed.append)
    ref.dec()  # released: destructor ran
    ref.dec()  # underflow: saturates
    for _ in range(3):
        ref.inc()
        ref.dec()
    assert destroyed == ["x"]
    assert [r.kind for r in audit.reports] == ["refcount-underflow"]  # reported once
    assert audit.check() == []  # a saturated reference is not also a leak
    audit.close()


def test_saturated_at_max() -> None:
    audit = RefAudit(on_error="report")
    ref = audit.track("big", initial=memguard.refaudit.REFCOUNT_MAX)
    ref.inc()
    assert [r.kind for r in audit.reports] == ["refcount-saturated"]
    ref.dec()  # ignored: saturated references leak rather than free
    assert ref.count == memguard.refaudit.REFCOUNT_MAX
    audit.close()


def test_leaks_are_grouped_by_acquiring_stack_like_ref_tracker() -> None:
    audit = RefAudit(on_error="report")
    target = Prop()
    ref = audit.track(target, name="prop")
    for _ in range(2):
        acquire(ref)
    text = audit.format_leaks()
    assert f"prop@0x{id(target):x} has 2/3 users at:" in text
    assert f"prop@0x{id(target):x} has 1/3 users at:" in text
    assert "in acquire" in text
    reports = audit.check()
    assert sorted((r.kind, r.count) for r in reports) == [("refcount-leak", 1), ("refcount-leak", 2)]
    by_count = {r.count: r for r in reports}
    assert by_count[2].alloc_stack[0].name == "acquire"
    ref.dec()
    ref.dec()
    ref.dec()
    assert audit.check() == []
    audit.close()


def test_close_raises_the_leak_under_raise_policy_and_is_idempotent() -> None:
    audit = RefAudit()
    audit.track("forgotten")
    with pytest.raises(RefcountError, match="forgotten has 1/1 users at:"):
        audit.close()
    assert audit.closed and audit.close() == []
    with pytest.raises(memguard.HeapClosedError):
        audit.track("late")


def test_untrack_and_deferred_errors() -> None:
    audit = RefAudit()
    audit.untrack(audit.track("singleton"))
    assert audit.check() == []
    ref = audit.track("y")
    ref.dec()
    with audit.deferred_errors():
        ref.dec()  # recorded, not raised
    assert audit.reports[-1].kind == "refcount-underflow"
    with pytest.raises(RefcountError):
        audit.check()
    audit.close()


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"initial": 0}, ValueError),
        ({"initial": -1}, ValueError),
        ({"initial": 1.5}, TypeError),
        ({"name": 3}, TypeError),
        ({"destructor": "nope"}, TypeError),
    ],
)
def test_bad_track_arguments(kwargs: dict, exc: type) -> None:
    audit = RefAudit()
    with pytest.raises(exc):
        audit.track("t", **kwargs)
    audit.close()


def test_bad_targets_and_options() -> None:
    audit = RefAudit()
    for target, exc in ((None, TypeError), (True, TypeError), (-4, ValueError)):
        with pytest.raises(exc):
            audit.track(target)
    with pytest.raises(ValueError):
        audit.untrack(object())
    audit.close()
    with pytest.raises(ValueError):
        RefAudit(on_error="ignore")
    with pytest.raises(TypeError):
        RefAudit(stack_depth="8")


def test_audit_plugins_see_reports_and_add_checks() -> None:
    seen: list[str] = []

    class Plugin:
        @memguard.hookimpl
        def memguard_report(self, report):
            seen.append(report.kind)

        @memguard.hookimpl
        def memguard_check(self, heap):
            assert isinstance(heap, RefAudit)
            return [memguard.Report(kind="refcount-custom", message="custom")]

    audit = RefAudit(on_error="report", plugins=[Plugin()])
    ref = audit.track("z")
    assert [r.kind for r in audit.check()] == ["refcount-leak", "refcount-custom"]
    ref.dec()
    ref.dec()
    assert seen == ["refcount-leak", "refcount-custom", "refcount-underflow"]
    audit.close()


class RefModel(RuleBasedStateMachine):
    """RefAudit against a model: counts, saturation, destructions, findings."""

    def __init__(self) -> None:
        super().__init__()
        self.audit = RefAudit(on_error="report", stack_depth=2)
        self.refs: list[memguard.Ref] = []
        self.model: list[dict] = []
        self.destroyed: list[int] = []
        self.expected_kinds: list[str] = []

    @rule(initial=st.integers(1, 3))
    def track(self, initial: int) -> None:
        i = len(self.refs)
        self.refs.append(self.audit.track(f"r{i}", initial=initial, destructor=lambda _t, i=i: self.destroyed.append(i)))
        self.model.append({"count": initial, "saturated": False})

    @precondition(lambda self: self.refs)
    @rule(data=st.data())
    def inc(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.refs) - 1))
        m = self.model[i]
        self.refs[i].inc()
        if m["saturated"]:
            return
        if m["count"] == 0:
            m["saturated"] = True
            self.expected_kinds.append("refcount-use-after-release")
        else:
            m["count"] += 1

    @precondition(lambda self: self.refs)
    @rule(data=st.data())
    def dec(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.refs) - 1))
        m = self.model[i]
        self.refs[i].dec()
        if m["saturated"]:
            return
        if m["count"] == 0:
            m["saturated"] = True
            self.expected_kinds.append("refcount-underflow")
        else:
            m["count"] -= 1

    @invariant()
    def agrees(self) -> None:
        assert [r.count for r in self.refs] == [m["count"] for m in self.model]
        assert [r.saturated for r in self.refs] == [m["saturated"] for m in self.model]
        assert [r.kind for r in self.audit.reports] == self.expected_kinds
        # each reference is destroyed at most once, exactly when its count first reached 0
        assert len(self.destroyed) == len(set(self.destroyed))
        released = {i for i, r in enumerate(self.refs) if r.released}
        assert set(self.destroyed) == released
        held = {i for i, m in enumerate(self.model) if m["count"] > 0 and not m["saturated"]}
        assert {r.name for r in self.audit.refs()} == {f"r{i}" for i in held}

    def teardown(self) -> None:
        held = sum(1 for m in self.model if m["count"] > 0 and not m["saturated"])
        leaks = self.audit.close()
        assert len({r.extra["ref"] for r in leaks}) == held
        assert all(r.kind == "refcount-leak" for r in leaks)


TestRefModel = RefModel.TestCase
TestRefModel.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)


def test_tokens_release_exactly_one_acquisition() -> None:
    audit = RefAudit(on_error="report")
    ref = audit.track("node")
    token = acquire_token(ref)
    ref.inc()  # a later acquisition, from this test
    ref.dec(token)  # releases acquire_token's, not the most recent
    ref.dec(0)  # releases track's
    (leak,) = audit.leaks()
    assert leak.alloc_stack[0].name == "test_tokens_release_exactly_one_acquisition"
    with pytest.raises(ValueError, match="not an outstanding acquisition"):
        ref.dec(token)
    with pytest.raises(TypeError):
        ref.dec("token")
    ref.dec()
    ref.dec(token)  # at zero: an underflow finding, not a ValueError
    assert [r.kind for r in audit.reports] == ["refcount-underflow"]
    audit.close()


def acquire_token(ref: memguard.Ref) -> int:
    return ref.inc()
