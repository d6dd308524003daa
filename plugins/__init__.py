"""memguard's first-party plugins, installed as the package ``memguard_plugins``.

Each module here is a plugin that uses only the public ``memguard`` names and the hooks
of :mod:`memguard.hookspecs`, exactly as a third-party plugin would.  The distribution
declares every one of them in the ``memguard`` entry-point group, so they are loaded
onto the process-wide heap by default (``disable_plugins=NAME`` in ``MEMGUARD_OPTIONS``
turns one off).  Register one on a heap of your own with ``GuardedHeap(plugins=[module])``
or ``heap.plugins.register(module)``.
"""

from __future__ import annotations

__all__ = ["FIRST_PARTY"]

#: Importable names of every first-party plugin module.
FIRST_PARTY: tuple[str, ...] = ("memguard_plugins.pool_invariants", "memguard_plugins.bufpool_budget",
                               "memguard_plugins.defrag_verifier", "memguard_plugins.strtab_invariants",
                               "memguard_plugins.manager_budget")
