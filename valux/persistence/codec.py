"""msgpack encoding of journal events and snapshots.

Money is ``Decimal`` everywhere outside the evaluation arrays, so the codec
carries Decimals losslessly (ext type 1, their canonical string). Tuples come
back as lists; state classes convert on load.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgpack

_DECIMAL = 1


def _default(obj: object) -> msgpack.ExtType:
    if isinstance(obj, Decimal):
        return msgpack.ExtType(_DECIMAL, str(obj).encode("ascii"))
    raise TypeError(f"cannot encode {type(obj).__name__} in a journal event")


def _ext_hook(code: int, data: bytes) -> object:
    if code == _DECIMAL:
        return Decimal(data.decode("ascii"))
    return msgpack.ExtType(code, data)


def encode(value: Any) -> bytes:
    """Serialise an event or a snapshot."""
    packed: bytes = msgpack.packb(value, default=_default, use_bin_type=True)
    return packed


def decode(data: bytes) -> Any:
    """Inverse of :func:`encode`."""
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
