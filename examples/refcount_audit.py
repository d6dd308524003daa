"""Audit reference counts like Linux refcount_t + ref_tracker: a leak and an underflow.

Run: python examples/refcount_audit.py
"""

from __future__ import annotations

import memguard


class Prop:
    """A node of a property tree (the seed's prop_t)."""

    def __init__(self, audit: memguard.RefAudit, parent: "Prop | None" = None) -> None:
        self.ref = audit.track(self, name="prop", destructor=lambda p: print(f"destroyed {p.ref.label}"))
        self.parent = parent
        self.parent_token = parent.ref.inc() if parent is not None else 0  # a child holds its parent


def subscribe(prop: Prop) -> None:
    prop.ref.inc()  # ... and forgets to drop it


audit = memguard.RefAudit(on_error="report")
root = Prop(audit)
child = Prop(audit, root)
subscribe(root)
root.ref.dec(child.parent_token)  # the child lets go of root (exactly its own reference)
child.ref.dec()  # the child goes away: destroyed
root.ref.dec(0)  # the owner's reference (token 0: the one track() took)
print("outstanding:")
print(audit.format_leaks())

gone = Prop(audit)
gone.ref.dec()
gone.ref.dec()  # one dec too many
print(audit.reports[-1].headline())
audit.close()
print(f"{len(audit.reports)} finding(s):", ", ".join(r.kind for r in audit.reports))
