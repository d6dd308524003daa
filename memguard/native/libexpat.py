"""libexpat: its ``XML_Memory_Handling_Suite`` structure, its functions, its loader."""

from __future__ import annotations

import ctypes

from memguard.native.loader import cached, load_library, require
from memguard.native.prototypes import FREE_FN, MALLOC_FN, REALLOC_FN

__all__ = ["XMLMemoryHandlingSuite", "ExpatLib", "expat"]

_vp = ctypes.c_void_p
_cp = ctypes.c_char_p
_c_int = ctypes.c_int


class XMLMemoryHandlingSuite(ctypes.Structure):
    """expat's ``XML_Memory_Handling_Suite``: ``malloc_fcn``, ``realloc_fcn``, ``free_fcn``."""

    _fields_ = [("malloc_fcn", MALLOC_FN), ("realloc_fcn", REALLOC_FN), ("free_fcn", FREE_FN)]


class ExpatLib:
    """libexpat's functions with prototypes set (see :func:`expat`)."""

    XML_STATUS_ERROR = 0
    XML_STATUS_OK = 1
    #: ``void (*XML_StartElementHandler)(void *userData, const XML_Char *name, const XML_Char **atts)``
    START_HANDLER = ctypes.CFUNCTYPE(None, _vp, _cp, ctypes.POINTER(_cp))
    #: ``void (*XML_EndElementHandler)(void *userData, const XML_Char *name)``
    END_HANDLER = ctypes.CFUNCTYPE(None, _vp, _cp)

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: require(lib, "libexpat", name, res, *args)  # noqa: E731
        self.lib = lib
        self.XML_ExpatVersion = d("XML_ExpatVersion", _cp)
        self.XML_ParserCreate = d("XML_ParserCreate", _vp, _cp)
        self.XML_ParserCreate_MM = d(
            "XML_ParserCreate_MM", _vp, _cp, ctypes.POINTER(XMLMemoryHandlingSuite), _cp
        )
        self.XML_Parse = d("XML_Parse", _c_int, _vp, _cp, _c_int, _c_int)
        self.XML_ParserFree = d("XML_ParserFree", None, _vp)
        self.XML_GetErrorCode = d("XML_GetErrorCode", _c_int, _vp)
        self.XML_ErrorString = d("XML_ErrorString", _cp, _c_int)
        self.XML_GetCurrentLineNumber = d("XML_GetCurrentLineNumber", ctypes.c_ulong, _vp)
        self.XML_SetElementHandler = d("XML_SetElementHandler", None, _vp, self.START_HANDLER, self.END_HANDLER)
        self.version: bytes = self.XML_ExpatVersion()


def expat() -> ExpatLib:
    """The system libexpat, loaded once, every function memguard uses declared."""
    return cached("expat", lambda: ExpatLib(load_library("expat")))
