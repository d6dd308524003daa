"""C-callable allocators over a :class:`~memguard.GuardedHeap`.

Many C libraries (zlib, bzip2, liblzma, expat, SQLite …) take a custom allocator.
:class:`CAllocator` wraps a guarded heap in ctypes callbacks that C can call, so the
library's own allocations land on the guarded heap: their overflows, double frees,
uses after free and leaks are reported with the Python stack that called into the
library.

A finding inside a callback cannot raise through C.  Every callback therefore runs
with the heap's errors deferred (see :meth:`GuardedHeap.deferred_errors`): the finding
is recorded in ``heap.reports`` and passed to plugins (``memguard_report``) at once,
the callback returns what the C contract expects (NULL from an allocation that failed,
nothing from ``free``), and the next :meth:`GuardedHeap.check` raises it (with
``on_error="raise"``).  Any other exception inside a callback (a negative size from a C
``int``, a bug) becomes a ``callback-error`` report the same way; a failed allocation
(:class:`MemoryError`) is simply NULL, as from ``malloc``.  Nothing a callback is given
can crash the process: the heap never dereferences an address it does not own.

C may also call a callback while a Python exception is pending (on its error paths).
When memguard's trampolines are built (:mod:`memguard.native.trampoline`), every
callback handed out is a trampoline that sets that exception aside around the call and
puts it back, so it reaches the Python code that called into C unchanged.
"""

from __future__ import annotations

import _thread
import threading
import weakref
from types import FunctionType
from typing import Any, Callable

from memguard import native
from memguard.native import trampoline
from memguard._location import is_own_file
from memguard.errors import HeapClosedError, MemguardError, TrampolineUnavailableError
from memguard.findings import thread_label
from memguard.report import Report
from memguard.stacks import Frame, current_stack

__all__ = ["CAllocator", "KINDS", "allocator_for", "c_site"]

#: The callback kinds :meth:`CAllocator.function` can build, with their C shapes.
KINDS: dict[str, str] = {
    "malloc": "void *(size_t size)",
    "calloc": "void *(size_t count, size_t size)",
    "realloc": "void *(void *ptr, size_t size)",
    "free": "void (void *ptr)",
    "size": "size_t (void *ptr)  -- the block's size, 0 for NULL or an unknown pointer",
    "opaque_alloc": "void *(void *opaque, N items, N size)  -- malloc(items * size)",
    "opaque_calloc": "void *(void *opaque, N items, N size)  -- calloc(items, size)",
    "opaque_free": "void (void *opaque, void *ptr)",
    "ctx_malloc": "void *(void *ctx, size_t size)",
    "ctx_calloc": "void *(void *ctx, size_t count, size_t size)",
    "ctx_realloc": "void *(void *ctx, void *ptr, size_t size)",
    "ctx_free": "void (void *ctx, void *ptr)",
    "ctx_sized_free": "void (void *ctx, void *ptr, size_t size)  -- size checked against the block's",
    "strdup": "char *(const char *s)",
    "malloc_file_line": "void *(size_t size, const char *file, int line)",
    "realloc_file_line": "void *(void *ptr, size_t size, const char *file, int line)",
    "free_file_line": "void (void *ptr, const char *file, int line)",
}

#: The kinds that release memory (they return nothing and count no NULL return).
_RELEASING = frozenset({"free", "opaque_free", "size", "ctx_free", "ctx_sized_free", "free_file_line"})

#: At most this many distinct C allocation sites (file, line) get a cached frame.
_SITE_CACHE_MAX = 4096
_site_lock = threading.Lock()
_sites: dict[tuple[bytes, int], Callable[..., Any]] = {}
_SITE_CODE = (lambda call, *args: call(*args)).__code__  # noqa: E731 - one line: its line is the C line


def c_site(file: bytes | None, line: int) -> Callable[..., Any]:
    """A function ``site(call, *args)`` that calls ``call(*args)`` from a frame at C's ``file:line``.

    The heap captures the stack of the frame that calls it, so an allocation made
    through ``site`` has ``file:line in <C>`` as its first frame, above the Python
    frames that called into the C library.  One function per site is cached (up to
    :data:`_SITE_CACHE_MAX` sites; later sites get an uncached one).
    """
    key = (file or b"", line)
    site = _sites.get(key)
    if site is None:
        name = key[0].decode("utf-8", "replace") or "<unknown C file>"
        lineno = line if 0 <= line < 1 << 30 else 0
        replace: dict[str, Any] = {"co_filename": name, "co_firstlineno": lineno, "co_name": "<C>"}
        if hasattr(_SITE_CODE, "co_qualname"):
            replace["co_qualname"] = "<C>"
        site = FunctionType(_SITE_CODE.replace(**replace), {})
        with _site_lock:
            if len(_sites) < _SITE_CACHE_MAX:
                site = _sites.setdefault(key, site)
    return site

def _user_stack(depth: int) -> tuple[Frame, ...]:
    """The calling thread's Python stack without memguard's own frames."""
    stack = current_stack(depth + 16, skip=1)
    return tuple(f for f in stack if not is_own_file(f.filename))[:depth]


class CAllocator:
    """A guarded heap as C function pointers.

    Attributes are ctypes callbacks (``CFUNCTYPE`` instances) that C can call and that
    can be stored directly in a ctypes structure field of the same prototype:

    ========================  ==========================================================
    ``malloc(size)``          :data:`memguard.native.MALLOC_FN`
    ``calloc(n, size)``       :data:`memguard.native.CALLOC_FN`
    ``realloc(p, size)``      :data:`memguard.native.REALLOC_FN`
    ``free(p)``               :data:`memguard.native.FREE_FN`
    ``size(p)``               :data:`memguard.native.SIZE_FN` (the block's size)
    ``opaque_alloc(o, n, s)`` zlib's ``alloc_func`` (:data:`memguard.native.ZALLOC_FN`)
    ``opaque_free(o, p)``     zlib's ``free_func``, bzip2's ``bzfree``, lzma's ``free``
    ========================  ==========================================================

    Other prototypes (bzip2's ``int`` sizes, liblzma's ``size_t`` sizes, SQLite's ``int``
    sizes) and the other shapes of :data:`KINDS` are built by :meth:`function`:

    * context-first (NumPy's ``PyDataMem_Handler``, zstd's ``ZSTD_customMem``):
      ``ctx_malloc``, ``ctx_calloc``, ``ctx_realloc``, ``ctx_free`` and ``ctx_sized_free``
      (:data:`~memguard.native.CTX_MALLOC_FN` …); the context pointer is ignored (this
      object is the context);
    * ``ctx_sized_free`` checks the size C passes against the block's size and reports a
      difference as a ``free-size-mismatch`` finding (then frees the block), unless the
      allocator was made with ``check_free_size=False``;
    * ``strdup`` (libxml2's ``xmlStrdupFunc``): a copy of a C string on the heap;
    * ``malloc_file_line``, ``realloc_file_line``, ``free_file_line`` (OpenSSL's
      ``CRYPTO_set_mem_functions``): C's ``file:line`` is the first frame of the stacks
      the heap records, above the Python frames that called into C.

    ``strdup`` and the file/line kinds read the NUL-terminated strings C passes, as the
    C contracts of those functions say.  The callbacks live as long as this object: keep
    it (or the structure holding its callbacks) alive for as long as C may call them.

    :param heap: the :class:`~memguard.GuardedHeap` the memory comes from.
    :param check_free_size: whether ``ctx_sized_free`` reports a size that is not the
        block's.

    :ivar heap: the :class:`~memguard.GuardedHeap` the memory comes from.
    :ivar null_returns: allocations answered with NULL (out of memory, bad arguments,
        findings) since creation.
    :ivar errors: exceptions that could not be recorded on the heap (it was closed).
    """

    def __init__(self, heap: Any, *, check_free_size: bool = True) -> None:
        from memguard.heap.guarded import GuardedHeap

        if not isinstance(heap, GuardedHeap):
            raise TypeError(f"CAllocator needs a GuardedHeap, got {type(heap).__name__}")
        if not isinstance(check_free_size, bool):
            raise TypeError(f"check_free_size must be a bool, got {type(check_free_size).__name__}")
        self.heap = heap
        self.check_free_size = check_free_size
        self.null_returns = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._callbacks: dict[tuple[str, type], Any] = {}
        #: The ctypes callbacks behind the trampolines (kept alive here).
        self._inner: dict[tuple[str, type], Any] = {}
        self._bindings: list[trampoline.Binding] = []
        # The slots go back when this allocator is garbage (not at exit: C may still call).
        weakref.finalize(self, trampoline.release, self._bindings).atexit = False
        self._bodies = self._make_bodies()
        self.malloc = self.function("malloc", native.MALLOC_FN)
        self.calloc = self.function("calloc", native.CALLOC_FN)
        self.realloc = self.function("realloc", native.REALLOC_FN)
        self.free = self.function("free", native.FREE_FN)
        self.size = self.function("size", native.SIZE_FN)
        self.opaque_alloc = self.function("opaque_alloc", native.ZALLOC_FN)
        self.opaque_free = self.function("opaque_free", native.OPAQUE_FREE_FN)

    def function(self, kind: str, prototype: Any, *, require_trampoline: str = "") -> Any:
        """The callback of ``kind`` (see :data:`KINDS`) with the C prototype ``prototype``.

        ``prototype`` is a ``ctypes.CFUNCTYPE`` class whose arity matches the kind, e.g.
        ``function("opaque_alloc", native.BZALLOC_FN)`` for bzip2's ``bzalloc``.  The
        callback is created once per ``(kind, prototype)`` and kept alive by this object.

        When memguard's trampolines are there (:mod:`memguard.native.trampoline`), the
        function pointer is a trampoline that keeps a Python exception C calls it with
        pending; otherwise it is the plain ctypes callback.  ``require_trampoline``
        names an integration that is unsafe without one: then a missing trampoline raises
        :class:`~memguard.errors.TrampolineUnavailableError` instead.
        """
        body = self._bodies.get(kind)
        if body is None:
            raise ValueError(f"unknown callback kind {kind!r}; expected one of {', '.join(KINDS)}")
        argtypes = getattr(prototype, "_argtypes_", None)
        if not isinstance(prototype, type) or argtypes is None:
            raise TypeError(f"prototype must be a ctypes.CFUNCTYPE class, got {prototype!r}")
        arity = body.__code__.co_argcount
        if len(argtypes) != arity:
            raise TypeError(f"a {kind!r} callback takes {arity} argument(s); {prototype.__name__} has {len(argtypes)}")
        key = (kind, prototype)
        with self._lock:
            cb = self._callbacks.get(key)
            if cb is None:
                inner = prototype(body)
                wrapped = trampoline.wrap(prototype, inner)
                if wrapped is None:
                    cb = inner
                else:
                    cb, binding = wrapped
                    self._inner[key] = inner
                    self._bindings.append(binding)
                self._callbacks[key] = cb
        if require_trampoline and key not in self._inner:
            trampoline.require(require_trampoline)
            raise TrampolineUnavailableError(
                f"{require_trampoline} needs a trampoline of the shape of {prototype.__name__} "
                f"({trampoline.shape_of(prototype) or 'unsupported'}), and none is free",
                integration=require_trampoline,
                reason="no trampoline of this shape is free",
            )
        return cb

    def trampolined(self, kind: str, prototype: Any) -> bool:
        """Whether the callback of ``kind`` and ``prototype`` goes through a trampoline."""
        return (kind, prototype) in self._inner

    @property
    def addresses(self) -> dict[str, int]:
        """The C address of each standard callback (for C code that takes raw pointers)."""
        import ctypes

        names = ("malloc", "calloc", "realloc", "free", "size", "opaque_alloc", "opaque_free")
        return {name: ctypes.cast(getattr(self, name), ctypes.c_void_p).value or 0 for name in names}

    # ------------------------------------------------------------------ callback bodies
    def _make_bodies(self) -> dict[str, Callable[..., Any]]:
        """The Python bodies of the callbacks, as closures over the heap's methods.

        Each body is kept minimal (the callback is on the library's hot path): it marks
        the thread as deferring errors, calls the heap and returns the address; every
        exception goes to :meth:`_failed`, which never raises.
        """
        heap = self.heap
        tls = heap.deferral  # the per-thread state heap.deferred_errors() uses, set without a generator
        h_malloc = heap.malloc
        h_calloc = heap.calloc
        h_realloc = heap.realloc
        h_free = heap.free
        failed = self._failed

        def c_malloc(size: int) -> int | None:
            tls.depth += 1
            try:
                return h_malloc(size)
            except BaseException as exc:  # noqa: BLE001 - nothing may escape into C
                return failed(exc, "malloc", size=size)
            finally:
                tls.depth -= 1

        def c_calloc(count: int, size: int) -> int | None:
            tls.depth += 1
            try:
                return h_calloc(count, size)
            except BaseException as exc:  # noqa: BLE001
                return failed(exc, "calloc", size=size, count=count)
            finally:
                tls.depth -= 1

        def c_realloc(address: int | None, size: int) -> int | None:
            tls.depth += 1
            try:
                return h_realloc(address or 0, size) or None
            except BaseException as exc:  # noqa: BLE001
                return failed(exc, "realloc", address=address or 0, size=size)
            finally:
                tls.depth -= 1

        def c_free(address: int | None) -> None:
            if not address:
                return
            tls.depth += 1
            try:
                h_free(address)
            except BaseException as exc:  # noqa: BLE001
                failed(exc, "free", address=address)
            finally:
                tls.depth -= 1

        def c_size(address: int | None) -> int:
            if not address:
                return 0
            tls.depth += 1
            try:
                info = heap.block(address)
                if info.state != "live":
                    raise ValueError(f"size of 0x{address:x}, a block that is not live ({info.state})")
                return info.size
            except BaseException as exc:  # noqa: BLE001
                failed(exc, "size", address=address)
                return 0
            finally:
                tls.depth -= 1

        def c_opaque_alloc(opaque: int | None, items: int, size: int) -> int | None:
            tls.depth += 1
            try:
                if items < 0 or size < 0:
                    raise ValueError(f"negative allocation request: {items} item(s) of {size} byte(s)")
                return h_malloc(items * size)
            except BaseException as exc:  # noqa: BLE001
                return failed(exc, "opaque_alloc", size=size, count=items)
            finally:
                tls.depth -= 1

        def c_opaque_calloc(opaque: int | None, items: int, size: int) -> int | None:
            tls.depth += 1
            try:
                return h_calloc(items, size)
            except BaseException as exc:  # noqa: BLE001
                return failed(exc, "opaque_calloc", size=size, count=items)
            finally:
                tls.depth -= 1

        def c_opaque_free(opaque: int | None, address: int | None) -> None:
            if not address:
                return
            tls.depth += 1
            try:
                h_free(address)
            except BaseException as exc:  # noqa: BLE001
                failed(exc, "opaque_free", address=address)
            finally:
                tls.depth -= 1

        h_view = heap.view
        check_size = self.check_free_size
        size_mismatch = self._size_mismatch

        def c_ctx_malloc(ctx: int | None, size: int) -> int | None:
            tls.depth += 1
            try:
                return h_malloc(size)
            except BaseException as exc:  # noqa: BLE001
                return failed(exc, "ctx_malloc", size=size)
            finally:
                tls.depth -= 1

        def c_ctx_calloc(ctx: int | None, count: int, size: int) -> int | None:
            tls.depth += 1
            try:
                return h_calloc(count, size)
            except BaseException as exc:  # noqa: BLE001
                return failed(exc, "ctx_calloc", size=size, count=count)
            finally:
                tls.depth -= 1

        def c_ctx_realloc(ctx: int | None, address: int | None, size: int) -> int | None:
            tls.depth += 1
            try:
                return h_realloc(address or 0, size) or None
            except BaseException as exc:  # noqa: BLE001
                return failed(exc, "ctx_realloc", address=address or 0, size=size)
            finally:
                tls.depth -= 1

        def c_ctx_sized_free(ctx: int | None, address: int | None, size: int) -> None:
            if not address:
                return
            tls.depth += 1
            try:
                if check_size:
                    try:
                        held = len(h_view(address))
                    except MemguardError:
                        held = size  # not a live block: the free below reports it
                    if held != size:
                        size_mismatch(address, held, size)
                h_free(address)
            except BaseException as exc:  # noqa: BLE001
                failed(exc, "ctx_sized_free", address=address)
            finally:
                tls.depth -= 1

        def c_strdup(text: bytes | None) -> int | None:
            tls.depth += 1
            try:
                if text is None:
                    raise ValueError("strdup(NULL)")
                p = h_malloc(len(text) + 1)
                h_view(p)[:] = text + b"\0"
                return p
            except BaseException as exc:  # noqa: BLE001
                return failed(exc, "strdup", size=len(text) + 1 if text is not None else 0)
            finally:
                tls.depth -= 1

        def c_malloc_file_line(size: int, file: bytes | None, line: int) -> int | None:
            tls.depth += 1
            try:
                return c_site(file, line)(h_malloc, size)  # type: ignore[no-any-return]
            except BaseException as exc:  # noqa: BLE001
                return failed(exc, "malloc_file_line", size=size)
            finally:
                tls.depth -= 1

        def c_realloc_file_line(address: int | None, size: int, file: bytes | None, line: int) -> int | None:
            tls.depth += 1
            try:
                return c_site(file, line)(h_realloc, address or 0, size) or None
            except BaseException as exc:  # noqa: BLE001
                return failed(exc, "realloc_file_line", address=address or 0, size=size)
            finally:
                tls.depth -= 1

        def c_free_file_line(address: int | None, file: bytes | None, line: int) -> None:
            if not address:
                return
            tls.depth += 1
            try:
                c_site(file, line)(h_free, address)
            except BaseException as exc:  # noqa: BLE001
                failed(exc, "free_file_line", address=address)
            finally:
                tls.depth -= 1

        return {
            "ctx_malloc": c_ctx_malloc,
            "ctx_calloc": c_ctx_calloc,
            "ctx_realloc": c_ctx_realloc,
            "ctx_free": c_opaque_free,
            "ctx_sized_free": c_ctx_sized_free,
            "strdup": c_strdup,
            "malloc_file_line": c_malloc_file_line,
            "realloc_file_line": c_realloc_file_line,
            "free_file_line": c_free_file_line,
            "malloc": c_malloc,
            "calloc": c_calloc,
            "realloc": c_realloc,
            "free": c_free,
            "size": c_size,
            "opaque_alloc": c_opaque_alloc,
            "opaque_calloc": c_opaque_calloc,
            "opaque_free": c_opaque_free,
        }

    def _size_mismatch(self, address: int, held: int, passed: int) -> None:
        """Report a sized free whose size is not the block's (inside the callback's deferral)."""
        heap = self.heap
        try:
            info = heap.block(address)
        except MemguardError:  # pragma: no cover - freed by another thread meanwhile
            return
        heap.emit([Report(
            kind="free-size-mismatch",
            address=address,
            size=held,
            serial=info.serial,
            alloc_stack=info.alloc_stack,
            stack=_user_stack(heap.stack_depth),
            thread=thread_label(),
            message=(
                f"free of 0x{address:x} with size {passed}, but the block was allocated "
                f"with {held} byte(s)"
            ),
            extra={"passed_size": passed},
        )])

    def _failed(self, exc: BaseException, what: str, address: int = 0, size: int = 0, count: int = 1) -> None:
        """Turn an exception inside a callback into NULL (and a report when it is a finding).

        Runs inside the callback's deferral, so a report emitted here is recorded, not
        raised.  Never raises.
        """
        try:
            releasing = what in _RELEASING
            if not releasing:
                self.null_returns += 1
            heap = self.heap
            if isinstance(exc, MemoryError):
                return None  # out of memory (or larger than SIZE_MAX): NULL, as from malloc
            if isinstance(exc, HeapClosedError) or heap.closed:
                self.errors.append(exc)
                return None
            if isinstance(exc, MemguardError) and exc.report is not None:
                if not any(r is exc.report for r in heap.reports):
                    heap.emit([exc.report])
                return None
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                # Cannot be raised through C: deliver Ctrl-C once control is back in Python.
                self.errors.append(exc)
                if isinstance(exc, KeyboardInterrupt):
                    _thread.interrupt_main()
                return None
            if "realloc" in what:
                args = f"0x{address:x}, {size}"
            elif releasing:
                args = f"0x{address:x}"
            elif "calloc" in what or what.startswith("opaque"):
                args = f"{count}, {size}"
            else:
                args = f"{size}"
            report = Report(
                kind="callback-error",
                address=address,
                size=0 if releasing else size,
                stack=_user_stack(heap.stack_depth),
                thread=thread_label(),
                message=f"{type(exc).__name__} in the C {what}({args}) callback: {exc}; NULL/nothing returned to C",
                extra={"callback": what, "exception": type(exc).__name__},
            )
            heap.emit([report])
        except BaseException as inner:  # noqa: BLE001 - on_error="abort" aside, never raise into C
            try:
                self.errors.append(inner)
            except BaseException:  # noqa: BLE001  # pragma: no cover
                pass
        return None

    def __repr__(self) -> str:
        return f"<CAllocator over {self.heap!r}>"


def allocator_for(obj: Any) -> CAllocator:
    """The :class:`CAllocator` for ``obj``: a ``CAllocator`` itself, or a heap's allocator.

    For a :class:`~memguard.GuardedHeap` this is ``heap.c_allocator()``: one allocator per
    heap, kept alive by the heap, so callbacks handed to C stay valid as long as the heap.
    """
    if isinstance(obj, CAllocator):
        return obj
    from memguard.heap.guarded import GuardedHeap

    if not isinstance(obj, GuardedHeap):
        raise TypeError(f"expected a CAllocator or a GuardedHeap, got {type(obj).__name__}")
    # One allocator per heap, cached on the heap (see GuardedHeap.c_allocator), so that
    # callbacks handed to C through a helper that was given only the heap stay alive as
    # long as the heap does.
    return obj.c_allocator()


