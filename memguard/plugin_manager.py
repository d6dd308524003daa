"""Plugin management: one pluggy ``PluginManager`` per checker, created on first use.

:class:`HeapPlugins` is what ``checker.plugins`` returns.  It registers plugins, hands the
checker its hook seams (a :class:`~memguard.seams.Seams`, each seam set only while some
registered plugin implements the matching hook), guards against re-entrancy
and turns a plugin's exception into a ``plugin-error`` report naming the plugin and
the hook.  Nothing here runs at import time: no manager exists until a heap asks for
one, and entry points are loaded only by :func:`load_entrypoint_plugins`.

``MEMGUARD_TRACE_PLUGINS=1`` in the environment prints every hook call (with its
arguments and result) to stderr, for people writing plugins.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import threading
from types import TracebackType
from typing import IO, Any, Callable, Iterator, Mapping, Sequence

import pluggy

from memguard import hookspecs
from memguard._location import is_own_file
from memguard.errors import MemguardError
from memguard.findings import thread_label
from memguard.heap.layout import BlockInfo
from memguard.leaks import LeakGroup, format_leaks, leaks_to_dict
from memguard.report import Report
from memguard.seams import Seams
from memguard.stacks import Frame, Stack, current_stack

__all__ = [
    "HeapPlugins",
    "PluginValidationError",
    "load_entrypoint_plugins",
    "write_leak_report",
    "ENTRYPOINT_GROUP",
    "TRACE_ENV",
]

#: The entry-point group third-party plugins declare themselves in.
ENTRYPOINT_GROUP = "memguard"
#: Environment variable that turns on hook-call tracing.
TRACE_ENV = "MEMGUARD_TRACE_PLUGINS"

_REJECTED_FREE = ("double-free", "bad-free")


class PluginValidationError(MemguardError, ValueError):
    """A plugin cannot be registered: unknown ``memguard_*`` hook, bad signature, duplicate.

    :ivar plugin: the plugin object.
    """

    def __init__(self, message: str, plugin: object = None) -> None:
        super().__init__(message)
        self.plugin = plugin


def _tb_stack(tb: TracebackType | None, depth: int = 16) -> Stack:
    """The frames of a traceback (memguard's own left out), most recent call first."""
    frames: list[Frame] = []
    while tb is not None:
        code = tb.tb_frame.f_code
        if is_own_file(code.co_filename):
            tb = tb.tb_next
            continue
        frames.append(Frame(code.co_filename, tb.tb_lineno, getattr(code, "co_qualname", code.co_name)))
        tb = tb.tb_next
    frames.reverse()
    return tuple(frames[:depth])


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Guarded:
    """What pluggy registers in place of a plugin: its hook implementations, each guarded.

    A plugin's exception must become a ``plugin-error`` report naming the plugin and the
    hook, and must not stop the other plugins' implementations.  pluggy's records of an
    implementation are final, so the guarding wrappers are made before registration, on
    this stand-in, which carries the plugin's marked functions (wrapped) and nothing else.
    Hook wrappers (generators) are carried as they are: pluggy drives them itself.

    :ivar plugin: the plugin object the user registered.
    """

    def __init__(self, plugin: object, name: str, owner: HeapPlugins) -> None:
        self.plugin = plugin
        marker = hookspecs.PROJECT + "_impl"
        for attr in dir(plugin):
            if attr.startswith("__"):
                continue
            try:
                method = inspect.getattr_static(plugin, attr)
            except AttributeError:  # pragma: no cover - listed by dir() but not there
                continue
            if isinstance(method, (staticmethod, classmethod)):
                method = method.__func__
            opts = getattr(method, marker, None) if callable(method) else None
            if not isinstance(opts, dict):
                continue
            function = getattr(plugin, attr)  # bound the way pluggy would have bound it
            if opts.get("wrapper") or opts.get("hookwrapper"):
                guarded = function
            else:
                guarded = owner._guard(function, name, opts.get("specname") or attr)
                setattr(guarded, marker, opts)
            self.__dict__[attr] = guarded

    def __repr__(self) -> str:
        return repr(self.plugin)


class _Manager(pluggy.PluginManager):
    """A PluginManager whose registrations (entry points included) go through :class:`HeapPlugins`.

    It holds :class:`_Guarded` stand-ins; :class:`HeapPlugins` speaks of the plugins themselves.
    """

    def __init__(self, owner: HeapPlugins) -> None:
        super().__init__(hookspecs.PROJECT)
        self.owner = owner
        self.add_hookspecs(hookspecs)

    def get_canonical_name(self, plugin: object) -> str:
        """Modules and classes by ``__name__``; instances as ``ClassName@0x<id>``."""
        name = getattr(plugin, "__name__", None)
        if isinstance(name, str):
            return name
        return f"{type(plugin).__name__}@0x{id(plugin):x}"

    def register(self, plugin: object, name: str | None = None) -> str | None:
        if self.owner.stand_in(plugin) is not None:
            raise PluginValidationError(f"plugin {plugin!r} is already registered", plugin)
        name = name or self.get_canonical_name(plugin)
        if self.is_blocked(name):
            return None
        guarded = _Guarded(plugin, name, self.owner)
        try:
            registered = super().register(guarded, name)
        except pluggy.PluginValidationError as exc:
            raise PluginValidationError(str(exc), plugin) from exc
        except ValueError as exc:
            raise PluginValidationError(str(exc), plugin) from exc
        if registered is not None:
            self.owner._registered(guarded, registered)
        return registered


class HeapPlugins:
    """The plugins of one heap (or one :class:`~memguard.RefAudit`): ``heap.plugins``.

    :ivar heap: the object the plugins observe.
    :ivar pm: the underlying :class:`pluggy.PluginManager`.
    :ivar hook: ``pm.hook``: call hooks by name (``plugins.hook.memguard_check(heap=h)``).
    :ivar implemented: names of the hooks at least one registered plugin implements.
    """

    def __init__(self, heap: Any) -> None:
        self.heap = heap
        self.pm = _Manager(self)
        self.hook = self.pm.hook
        self.implemented: frozenset[str] = frozenset()
        self._tls = threading.local()
        self._untrace: Callable[[], None] | None = None
        if os.environ.get(TRACE_ENV, "").strip() not in ("", "0", "false", "no"):
            self.trace(True)

    # ------------------------------------------------------------------ registration
    def register(self, plugin: object, name: str | None = None) -> str:
        """Register ``plugin`` (a module, class or instance with ``memguard_*`` hooks).

        Its ``memguard_configure`` runs at once.  Raises :class:`PluginValidationError`
        for an unknown ``memguard_*`` hook name, a hook parameter that does not exist, a
        plugin registered twice, or a blocked name.
        """
        if plugin is None or isinstance(plugin, (int, float, str, bytes)):
            raise TypeError(f"a plugin must be a module, class or object with hooks, got {type(plugin).__name__}")
        registered = self.pm.register(plugin, name)
        if registered is None:
            raise PluginValidationError(f"plugin name {name!r} is blocked", plugin)
        return registered

    def _registered(self, plugin: _Guarded, name: str) -> None:
        """Validate a new registration's hooks, update the seams, configure it."""
        callers = self.pm.get_hookcallers(plugin) or []
        unknown = [
            caller.name for caller in callers
            if not caller.has_spec() and caller.name.startswith("memguard_")
            and any(i.plugin is plugin and not i.optionalhook for i in caller.get_hookimpls())
        ]
        if unknown:
            self.pm.unregister(plugin)
            raise PluginValidationError(
                f"plugin {name!r} implements unknown hook(s) {', '.join(sorted(unknown))}; "
                f"known hooks: {', '.join(hookspecs.HOOK_NAMES)}",
                plugin.plugin,
            )
        self._update()
        if "memguard_configure" in self.implemented:
            others = [p for p in self.pm.get_plugins() if p is not plugin]
            self._call(self.pm.subset_hook_caller("memguard_configure", others), "memguard_configure", {"heap": self.heap})
            self._flush(deferred=False)

    def _stand_ins(self) -> list[_Guarded]:
        """What pluggy holds, in registration order (every registration goes through :class:`_Guarded`)."""
        return [p for _, p in self.pm.list_name_plugin() if isinstance(p, _Guarded)]

    def stand_in(self, plugin: object) -> _Guarded | None:
        """What pluggy holds for ``plugin`` (``None`` when it is not registered)."""
        for guarded in self._stand_ins():
            if guarded.plugin is plugin:
                return guarded
        return None

    def unregister(self, plugin: object) -> None:
        """Remove a plugin (by object or by name); its hooks stop being called at once."""
        target = self.pm.get_plugin(plugin) if isinstance(plugin, str) else self.stand_in(plugin)
        if target is None or not self.pm.is_registered(target):
            raise ValueError(f"{plugin!r} is not registered on {self.heap!r}")
        self.pm.unregister(target)
        self._update()

    def block(self, name: str) -> None:
        """Block a plugin name: unregister it if present and never register it again."""
        self.pm.set_blocked(name)
        self._update()

    def get_plugins(self) -> list[object]:
        """The registered plugins, in registration order."""
        return [p.plugin for p in self._stand_ins()]

    def get_plugin(self, name: str) -> object | None:
        """The plugin registered under ``name``, or ``None``."""
        guarded = self.pm.get_plugin(name)
        return guarded.plugin if isinstance(guarded, _Guarded) else None

    def get_name(self, plugin: object) -> str | None:
        """The name ``plugin`` is registered under, or ``None``."""
        guarded = self.stand_in(plugin)
        return self.pm.get_name(guarded) if guarded is not None else None

    def __iter__(self) -> Iterator[object]:
        return iter(self.get_plugins())

    def __len__(self) -> int:
        return len(self.get_plugins())

    def __contains__(self, plugin: object) -> bool:
        if isinstance(plugin, str):
            return self.pm.has_plugin(plugin)
        return self.stand_in(plugin) is not None

    def is_implemented(self, hook_name: str) -> bool:
        """Whether some registered plugin implements ``hook_name``."""
        return hook_name in self.implemented

    def check_pending(self) -> None:
        """Raise :class:`PluginValidationError` if an implementation matches no hook spec."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginValidationError(str(exc), getattr(exc.plugin, "plugin", exc.plugin)) from exc

    def load_entrypoints(self, group: str = ENTRYPOINT_GROUP, name: str | None = None) -> int:
        """Register the plugins declared in the entry-point ``group``; return how many."""
        return self.pm.load_setuptools_entrypoints(group, name)

    def _update(self) -> None:
        """Recompute which hooks are implemented and set the heap's seams accordingly."""
        implemented = set()
        for caller_name in hookspecs.HOOK_NAMES:
            caller = getattr(self.hook, caller_name, None)
            if caller is not None and caller.get_hookimpls():
                implemented.add(caller_name)
        self.implemented = frozenset(implemented)
        self.heap.set_seams(Seams(
            on_alloc=self._on_alloc if "memguard_alloc" in implemented else None,
            on_free=self._on_free if "memguard_free" in implemented else None,
            on_report=self._on_report if "memguard_report" in implemented else None,
            on_check=self._on_check if "memguard_check" in implemented else None,
            on_ref=self._on_ref if "memguard_refcount" in implemented else None,
        ))

    # ------------------------------------------------------------------ guarding
    def _guard(self, function: Callable[..., Any], plugin_name: str, hook_name: str) -> Callable[..., Any]:
        """Wrap one hook implementation so that its exception becomes a ``plugin-error``."""
        check = hook_name == "memguard_check"

        def guarded(*args: Any) -> Any:
            __tracebackhide__ = True
            try:
                result = function(*args)
            except Exception as exc:
                self._failed(plugin_name, hook_name, exc)
                return None
            if check and result is not None:
                if isinstance(result, Report):
                    return [result]
                if not isinstance(result, (list, tuple)) or not all(isinstance(r, Report) for r in result):
                    self._failed(
                        plugin_name, hook_name,
                        TypeError(f"memguard_check must return a list of Report or None, got {_short(result, 60)}"),
                    )
                    return None
                return list(result)
            return result

        guarded.__wrapped__ = function  # type: ignore[attr-defined]
        guarded.__name__ = getattr(function, "__name__", hook_name)
        return guarded

    def _failed(self, plugin_name: str, hook_name: str, exc: BaseException) -> None:
        """Record a plugin's exception as a ``plugin-error`` report (emitted by :meth:`_flush`)."""
        stack = _tb_stack(exc.__traceback__) or current_stack(8, 2)
        report = Report(
            kind="plugin-error",
            stack=stack,
            thread=thread_label(),
            message=f"plugin {plugin_name!r} raised {type(exc).__name__}: {exc} in {hook_name}",
            extra={"plugin": plugin_name, "hook": hook_name, "exception": type(exc).__name__, "error": str(exc)},
        )
        errors = getattr(self._tls, "errors", None)
        if errors is None:
            errors = self._tls.errors = []
        errors.append(report)

    def _culprit(self, exc: BaseException, hook_name: str) -> str:
        """Name the plugin whose (unguarded, wrapper) implementation raised ``exc``."""
        codes = {}
        caller = getattr(self.hook, hook_name, None)
        for impl in caller.get_hookimpls() if caller is not None else ():
            code = getattr(getattr(impl.function, "__wrapped__", impl.function), "__code__", None)
            if code is not None:
                codes[code] = impl.plugin_name
        tb = exc.__traceback__
        name = "<unknown>"
        while tb is not None:
            name = codes.get(tb.tb_frame.f_code, name)
            tb = tb.tb_next
        return name

    def _call(self, caller: Any, hook_name: str, kwargs: Mapping[str, Any]) -> Any:
        """Call a hook with re-entrancy guarded; ``None`` when re-entered or when it failed."""
        tls = self._tls
        if getattr(tls, "busy", False):
            return None
        tls.busy = True
        try:
            return caller(**kwargs)
        except Exception as exc:  # a new-style wrapper raised: the guard cannot wrap generators
            self._failed(self._culprit(exc, hook_name), hook_name, exc)
            return None
        finally:
            tls.busy = False

    def _flush(self, deferred: bool, quiet: bool = False) -> list[Report]:
        """Emit the plugin errors recorded in this thread.

        ``deferred``: on the allocation path, ``on_error="raise"`` must not raise out of a
        ``malloc`` that succeeded, so the error is recorded and raised by the next ``check()``.
        ``quiet``: the errors came from ``memguard_report`` itself, so they are not shown
        to it again (that could loop).
        """
        errors = getattr(self._tls, "errors", None)
        if not errors:
            return []
        self._tls.errors = []
        if quiet:
            self._tls.busy = True
        try:
            if deferred:
                with self.heap.deferred_errors():
                    self.heap.emit(errors)
            else:
                self.heap.emit(errors)
        finally:
            if quiet:
                self._tls.busy = False
        return errors

    # ------------------------------------------------------------------ seams (called by the heap)
    def _on_alloc(self, heap: Any, address: int) -> None:
        if getattr(self._tls, "busy", False):
            return
        try:
            block = heap.block(address)
        except (ValueError, MemguardError):  # pragma: no cover - the block was just allocated
            return
        self._call(self.hook.memguard_alloc, "memguard_alloc", {"heap": heap, "block": block})
        self._flush(deferred=True)

    def _on_free(self, heap: Any, address: int) -> None:
        if getattr(self._tls, "busy", False):
            return
        # The heap calls this seam after a rejected free too (in "report" mode); the
        # rejection is the heap's last report, for this very address.
        reports = heap.reports
        if reports:
            last = reports[-1]
            if last.kind in _REJECTED_FREE and last.bad_address == address:
                return
        try:
            block = heap.block(address)
        except (ValueError, MemguardError):
            # A large block that left the quarantine at once: gone, size unknown.
            block = BlockInfo(address, 0, 0, "released", (), current_stack(heap.stack_depth, 2))
        else:
            if block.state != "quarantined":
                return
        self._call(self.hook.memguard_free, "memguard_free", {"heap": heap, "block": block})
        self._flush(deferred=True)

    def _on_report(self, report: Report) -> None:
        if getattr(self._tls, "busy", False):
            return
        self._call(self.hook.memguard_report, "memguard_report", {"report": report})
        self._flush(deferred=True, quiet=True)

    def _on_check(self, heap: Any) -> list[Report]:
        results = self._call(self.hook.memguard_check, "memguard_check", {"heap": heap}) or []
        out = [r for result in results for r in result]
        errors = getattr(self._tls, "errors", None)
        if errors:
            self._tls.errors = []
            out.extend(errors)
        return out

    def _on_ref(self, audit: Any, ref: Any, op: str) -> None:
        self._call(self.hook.memguard_refcount, "memguard_refcount", {"audit": audit, "ref": ref, "op": op})
        self._flush(deferred=True)

    def event(self, hook_name: str, **kwargs: Any) -> None:
        """Call an event hook (the ``memguard_pool_*`` family) if some plugin implements it.

        Used by sub-allocators; a plugin error is recorded and raised by the next check.
        """
        if hook_name not in self.implemented:
            return
        self._call(getattr(self.hook, hook_name), hook_name, kwargs)
        self._flush(deferred=True)

    def heap_closed(self) -> None:
        """Called by ``heap.close()``: run ``memguard_unconfigure`` once."""
        if "memguard_unconfigure" in self.implemented:
            self._call(self.hook.memguard_unconfigure, "memguard_unconfigure", {"heap": self.heap})
            errors = getattr(self._tls, "errors", None)
            if errors:
                # The heap is closed: record the errors, never raise out of close().
                self._tls.errors = []
                self.heap.reports.extend(errors)
                if "memguard_report" in self.implemented:
                    for r in errors:
                        self._on_report(r)

    # ------------------------------------------------------------------ leak reports
    def write_leaks(self, leaks: Sequence[LeakGroup], stream: IO[str], fmt: str = "text") -> None:
        """Write a leak report: a plugin's ``memguard_leak_report`` if one takes ``fmt``, else built in.

        Built-in formats: ``"text"`` (LeakSanitizer style; nothing when there are no
        leaks) and ``"json"``.  Raises ``ValueError`` for a format nobody writes.
        """
        if "memguard_leak_report" in self.implemented:
            kwargs = {"leaks": list(leaks), "stream": stream, "fmt": fmt}
            done = self._call(self.hook.memguard_leak_report, "memguard_leak_report", kwargs)
            self._flush(deferred=False)
            if done is not None:
                return
        _default_leak_writer(leaks, stream, fmt)

    # ------------------------------------------------------------------ tracing
    def trace(self, enable: bool = True, stream: IO[str] | None = None) -> None:
        """Print every hook call and its result (to ``stream``, default ``sys.stderr``)."""
        if self._untrace is not None:
            self._untrace()
            self._untrace = None
        if not enable:
            return
        label = getattr(self.heap, "name", type(self.heap).__name__)

        def write(text: str) -> None:
            out = stream if stream is not None else sys.stderr
            out.write(text)
            out.flush()

        def before(hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
            args = ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items())
            names = ", ".join(i.plugin_name for i in impls)
            write(f"memguard[{label}]: {hook_name}({args}) -> [{names}]\n")

        def after(outcome: Any, hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
            if outcome.exception is None:
                write(f"memguard[{label}]: {hook_name} returned {_short(outcome.get_result())}\n")
            else:
                write(f"memguard[{label}]: {hook_name} raised {outcome.exception!r}\n")

        self._untrace = self.pm.add_hookcall_monitoring(before, after)

    def __repr__(self) -> str:
        names = [self.get_name(p) for p in self.get_plugins()]
        return f"<HeapPlugins of {getattr(self.heap, 'name', self.heap)!r}: {names}>"


def _default_leak_writer(leaks: Sequence[LeakGroup], stream: IO[str], fmt: str) -> None:
    if fmt == "text":
        text = format_leaks(leaks)
        if text:
            stream.write(text + "\n")
    elif fmt == "json":
        json.dump(leaks_to_dict(leaks), stream, indent=2)
        stream.write("\n")
    else:
        raise ValueError(f"unknown leak report format {fmt!r}: built in are 'text' and 'json'; plugins may add more")


def write_leak_report(leaks: Sequence[LeakGroup], stream: IO[str], fmt: str = "text", heap: Any = None) -> None:
    """Write ``leaks`` to ``stream`` in ``fmt``, through ``heap``'s plugins when it has any.

    The entry point for the exit dump and the pytest plugin: a plugin's
    ``memguard_leak_report`` can take over any format.
    """
    manager = getattr(heap, "_plugins", None) if heap is not None else None
    if manager is not None:
        manager.write_leaks(leaks, stream, fmt)
    else:
        _default_leak_writer(leaks, stream, fmt)


def load_entrypoint_plugins(heap: Any, group: str = ENTRYPOINT_GROUP, disabled: Sequence[str] = ()) -> int:
    """Register on ``heap`` every plugin declared in the entry-point ``group``; return how many.

    For the process-wide heap and the pytest plugin (per-test heaps register their plugins
    explicitly).  ``disabled`` names entry points to skip.  Creates ``heap.plugins``.
    """
    if isinstance(disabled, str):
        raise TypeError("disabled must be a sequence of entry-point names, not a string")
    if not isinstance(getattr(type(heap), "plugins", None), property):
        raise TypeError(f"heap must be a memguard checker (a GuardedHeap, a RefAudit …), got {type(heap).__name__}")
    manager = heap.plugins
    for name in disabled:
        manager.block(name)
    return manager.load_entrypoints(group)
