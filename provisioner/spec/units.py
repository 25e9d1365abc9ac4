"""Sizes and modes as people write them, normalised to integers."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?)(B?)\s*$", re.IGNORECASE)
_POW = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


def parse_size(value: object) -> int:
    """'2GiB' -> 2147483648, '512M' -> 536870912, 1024 -> 1024.

    Like libvirt and Docker, a bare K/M/G means the binary unit; 'GB' (with
    an explicit B and no i) is decimal, as the SI prefix says."""
    if isinstance(value, bool):
        raise ValueError("must be a size like 2GiB or 512M")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("size cannot be negative")
        return value
    if isinstance(value, float) and value >= 0:
        return int(value)
    if not isinstance(value, str):
        raise ValueError("must be a size like 2GiB or 512M")
    m = _SIZE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a size like 2GiB or 512M")
    number, prefix, binary, byte = m.groups()
    prefix = prefix.upper()
    base = 1000 if (byte and not binary and prefix) else 1024
    return int(float(number) * base ** _POW[prefix])


def format_size(n: int) -> str:
    for unit, power in (("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)):
        div = 1024**power
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def parse_mode(value: object) -> int:
    """'0644' / '644' / 0o644 (YAML's 0644) -> 420. Symbolic modes are not
    supported: a declared mode is an absolute state."""
    if isinstance(value, bool):
        raise ValueError("must be an octal mode like '0644'")
    if isinstance(value, int):
        if not 0 <= value <= 0o7777:
            raise ValueError("must be an octal mode like '0644' (quote it in YAML)")
        return value
    if isinstance(value, str) and re.fullmatch(r"0?o?[0-7]{3,4}", value.strip()):
        return int(value.strip().replace("o", ""), 8)
    raise ValueError(f"{value!r} is not an octal mode like '0644'")
