"""NumPy's data-memory handler (NEP 49) as ctypes: the structure, the capsule, the setter.

NumPy keeps each array's data with a *handler*: a ``PyDataMem_Handler`` (a name, a
version, and a ``PyDataMemAllocator``: a context and context-first ``malloc``,
``calloc``, ``realloc`` and sized ``free``) in a ``PyCapsule`` named ``"mem_handler"``.
NumPy 2.x has no Python-level setter: ``PyDataMem_SetHandler`` is reached through
NumPy's C-API table (the ``_ARRAY_API`` capsule of ``numpy._core._multiarray_umath``),
exactly as a C extension's ``import_array()`` reaches it.  The table is read only after
its ABI and feature versions were checked (through the table's own version functions).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from memguard.errors import MemguardError
from memguard.native.prototypes import CTX_CALLOC_FN, CTX_MALLOC_FN, CTX_REALLOC_FN, CTX_SIZED_FREE_FN

__all__ = ["PyDataMemAllocator", "PyDataMemHandler", "NumpyCAPI", "numpy_api", "CAPSULE_NAME"]

#: The name NumPy requires of a handler's capsule.
CAPSULE_NAME = b"mem_handler"
#: Indices in NumPy's C-API table (numpy/_core/include/numpy/__multiarray_api.h).
_GET_ABI_VERSION = 0
_GET_FEATURE_VERSION = 211
_SET_HANDLER = 304
_GET_HANDLER = 305
#: NumPy's ABI major (2.x: 0x02000000; 1.x: 0x01000009) and the feature version of 1.22,
#: which introduced PyDataMem_SetHandler.
_ABI_VERSIONS = (0x01000009, 0x02000000)
_FEATURE_1_22 = 0x0000000F


class PyDataMemAllocator(ctypes.Structure):
    """``PyDataMemAllocator``: a context and context-first allocation functions."""

    _fields_ = [
        ("ctx", ctypes.c_void_p),
        ("malloc", CTX_MALLOC_FN),
        ("calloc", CTX_CALLOC_FN),
        ("realloc", CTX_REALLOC_FN),
        ("free", CTX_SIZED_FREE_FN),
    ]


class PyDataMemHandler(ctypes.Structure):
    """``PyDataMem_Handler``: ``char name[127]``, ``uint8_t version`` (1), the allocator."""

    _fields_ = [
        ("name", ctypes.c_char * 127),
        ("version", ctypes.c_uint8),
        ("allocator", PyDataMemAllocator),
    ]


_GETTER = ctypes.PYFUNCTYPE(ctypes.c_uint)
_SET_HANDLER_FN = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.py_object)
_GET_HANDLER_FN = ctypes.PYFUNCTYPE(ctypes.py_object)


class NumpyCAPI:
    """The two functions of NumPy's C API memguard uses, declared from its table.

    :ivar abi_version: ``PyArray_GetNDArrayCVersion()``.
    :ivar feature_version: ``PyArray_GetNDArrayCFeatureVersion()``.
    """

    def __init__(self) -> None:
        try:
            from numpy._core import _multiarray_umath as core  # NumPy 2
        except ImportError:  # pragma: no cover - NumPy 1.x
            from numpy.core import _multiarray_umath as core  # type: ignore[no-redef]
        # Python's own C API, declared on a private handle (no global argtypes changed).
        api = ctypes.PyDLL("python api", handle=ctypes.pythonapi._handle)
        get_pointer = api.PyCapsule_GetPointer
        get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        get_pointer.restype = ctypes.c_void_p
        is_capsule = api.PyCapsule_IsValid
        is_capsule.argtypes = [ctypes.py_object, ctypes.c_char_p]
        is_capsule.restype = ctypes.c_int
        new_capsule = api.PyCapsule_New
        new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        new_capsule.restype = ctypes.py_object
        self._is_capsule = is_capsule
        self._new_capsule = new_capsule
        capsule = getattr(core, "_ARRAY_API", None)
        if capsule is None or not is_capsule(capsule, None):
            raise MemguardError("numpy's _ARRAY_API is not the C-API capsule memguard expects")
        table = get_pointer(capsule, None)
        if not table:  # pragma: no cover - NumPy always fills it
            raise MemguardError("numpy's C-API table is NULL")
        self._capsule = capsule  # keeps the table alive
        entries = ctypes.cast(table, ctypes.POINTER(ctypes.c_void_p))
        self.abi_version = _GETTER(entries[_GET_ABI_VERSION])()
        if self.abi_version not in _ABI_VERSIONS:
            raise MemguardError(f"numpy's C ABI version 0x{self.abi_version:x} is not one memguard knows")
        self.feature_version = _GETTER(entries[_GET_FEATURE_VERSION])()
        if self.feature_version < _FEATURE_1_22:
            raise MemguardError(
                f"numpy's C-API version 0x{self.feature_version:x} has no PyDataMem_SetHandler (NumPy >= 1.22 has)"
            )
        self._set = _SET_HANDLER_FN(entries[_SET_HANDLER])
        self._get = _GET_HANDLER_FN(entries[_GET_HANDLER])
        self._name = ctypes.create_string_buffer(CAPSULE_NAME)  # a capsule keeps a pointer to its name

    def new_handler_capsule(self, handler: PyDataMemHandler) -> Any:
        """A ``"mem_handler"`` capsule pointing at ``handler`` (the caller keeps it alive)."""
        return self._new_capsule(ctypes.addressof(handler), self._name, None)

    def set_handler(self, capsule: Any) -> Any:
        """``PyDataMem_SetHandler(capsule)`` in the calling thread's context; the old handler."""
        if not self._is_capsule(capsule, CAPSULE_NAME):
            raise TypeError("a NumPy memory handler must be a PyCapsule named 'mem_handler'")
        return self._set(capsule)

    def get_handler(self) -> Any:
        """``PyDataMem_GetHandler()``: the calling thread's current handler capsule."""
        return self._get()


_lock = threading.Lock()
_capi: list[NumpyCAPI] = []


def numpy_api() -> NumpyCAPI:
    """NumPy's C API as memguard uses it (imports NumPy; made once)."""
    with _lock:
        if not _capi:
            _capi.append(NumpyCAPI())
        return _capi[0]
