"""The parts of CEL the policy language leaves out, and why — said the same way by the type
checker (lint) and the native compiler.

A lifetime policy reads declared attributes of fixed types, so CEL's dynamic typing has nothing
to do: ``dyn()`` and ``type()`` are refused, and so are CEL's type names used as values
(``int``, ``string``, ``list`` ...), which would otherwise be reported as unknown attributes.
"""

from __future__ import annotations

__all__ = ["LEFT_OUT_FUNCTIONS", "TYPE_NAMES"]

_TYPE_VALUE = "a CEL type name, not an attribute; types are values only for type(), which policies do not use"

# CEL's type identifiers -> why one cannot appear as a value in a condition.
TYPE_NAMES: dict[str, str] = {
    name: f"'{name}' is {_TYPE_VALUE}"
    for name in ("int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type", "dyn")
}

# CEL functions the policy language does not have -> why.
LEFT_OUT_FUNCTIONS: dict[str, str] = {
    "dyn": "dyn() is not part of the policy language: every attribute has a declared type, so there is "
           "no dynamic value to relax the type checker for; compare values of the same type",
    "type": "type() is not part of the policy language: an attribute always has its declared type (a "
            "context with another type is refused before evaluation); use has() to test presence",
}
