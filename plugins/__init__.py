"""memguard's first-party plugins.

Each module here is a plugin that uses only the public ``memguard`` names and the hooks
of :mod:`memguard.hookspecs`, exactly as a third-party plugin would (the way datasette
plugs in its own features).  Register one on a heap with
``heap.plugins.register(module)``, or declare it in the ``memguard`` entry-point group::

    [project.entry-points.memguard]
    pool_invariants = "plugins.memguard_pool_invariants"
"""

from __future__ import annotations

__all__ = ["FIRST_PARTY"]

#: Importable names of every first-party plugin module.
FIRST_PARTY: tuple[str, ...] = ("plugins.memguard_pool_invariants",)
