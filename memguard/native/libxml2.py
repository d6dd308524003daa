"""libxml2: its allocator setter (``xmlMemSetup``), the functions memguard uses, its loader."""

from __future__ import annotations

import ctypes

from memguard.native.loader import cached, is_loaded, load_library, require
from memguard.native.prototypes import FREE_FN, MALLOC_FN, REALLOC_FN, STRDUP_FN

__all__ = ["XmlError", "Xml2Lib", "xml2", "xml2_loaded"]

_vp = ctypes.c_void_p
_cp = ctypes.c_char_p
_c_int = ctypes.c_int


class XmlError(ctypes.Structure):
    """The leading fields of libxml2's ``xmlError`` (``domain``, ``code``, ``message``, ``level``, ``file``, ``line``)."""

    _fields_ = [("domain", _c_int), ("code", _c_int), ("message", _cp), ("level", _c_int), ("file", _cp),
                ("line", _c_int)]


class Xml2Lib:
    """libxml2's functions with prototypes set (see :func:`xml2`)."""

    XML_PARSE_NOERROR = 1 << 5
    XML_PARSE_NOWARNING = 1 << 6
    XML_PARSE_NONET = 1 << 11

    def __init__(self, lib: ctypes.CDLL) -> None:
        d = lambda name, res, *args: require(lib, "libxml2", name, res, *args)  # noqa: E731
        self.lib = lib
        self.xmlMemSetup = d("xmlMemSetup", _c_int, FREE_FN, MALLOC_FN, REALLOC_FN, STRDUP_FN)
        self.xmlInitParser = d("xmlInitParser", None)
        self.xmlCheckVersion = d("xmlCheckVersion", None, _c_int)
        self.xmlReadMemory = d("xmlReadMemory", _vp, _cp, _c_int, _cp, _cp, _c_int)
        self.xmlFreeDoc = d("xmlFreeDoc", None, _vp)
        self.xmlDocDumpMemory = d("xmlDocDumpMemory", None, _vp, ctypes.POINTER(_vp), ctypes.POINTER(_c_int))
        self.xmlDocGetRootElement = d("xmlDocGetRootElement", _vp, _vp)
        self.xmlChildElementCount = d("xmlChildElementCount", ctypes.c_ulong, _vp)
        self.xmlGetLastError = d("xmlGetLastError", ctypes.POINTER(XmlError))
        self.xmlResetLastError = d("xmlResetLastError", None)
        self.version: bytes = _cp.in_dll(lib, "xmlParserVersion").value or b""


def xml2_loaded() -> bool:
    """Whether libxml2 is mapped into the process already (by anyone, memguard included)."""
    return is_loaded("xml2")


def xml2() -> Xml2Lib:
    """The system libxml2, loaded once, every function memguard uses declared."""
    return cached("xml2", lambda: Xml2Lib(load_library("xml2")))
