"""Hook seams: how the hooks plugins implement reach a checker's code paths.

The plugin manager (:mod:`memguard.plugin_manager`) knows which ``memguard_*`` hooks its
plugins implement; a checker (:mod:`memguard.checker`) knows where to call them.  A
:class:`Seams` value is what passes between the two: one object, built by the plugin
manager whenever its plugins change and installed with ``checker.set_seams(seams)``.
Each seam is ``None`` while no plugin implements its hook, so a hook nobody implements
costs the checker one ``is not None`` test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple

if TYPE_CHECKING:
    from memguard.report import Report

__all__ = ["Seams", "NO_SEAMS"]


class Seams(NamedTuple):
    """The hook seams of a checker: each is ``None`` unless some plugin implements its hook.

    :ivar on_alloc: ``(checker, address)`` after an allocation (``memguard_alloc``).
    :ivar on_free: ``(checker, address)`` after a free (``memguard_free``).
    :ivar on_report: ``(report)`` for every finding (``memguard_report``).
    :ivar on_check: ``(checker) -> findings`` during ``check()`` (``memguard_check``).
    :ivar on_ref: ``(audit, ref, op)`` for every reference-count change (``memguard_refcount``).
    """

    on_alloc: Callable[[Any, int], None] | None = None
    on_free: Callable[[Any, int], None] | None = None
    on_report: Callable[[Report], None] | None = None
    on_check: Callable[[Any], list[Report]] | None = None
    on_ref: Callable[[Any, Any, str], None] | None = None



#: The seams of a checker no plugin observes.
NO_SEAMS = Seams()
