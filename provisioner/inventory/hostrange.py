"""Host name syntax: ``name:port`` splitting and ``[01:03]`` / ``[a:c]`` range expansion.

Follows the rules of Ansible's inventory host patterns:

* ``host:2222`` and ``[ipv6-or-name]:2222`` carry a port; a bare IPv6 address
  (``fe80::1``) has none (a port for IPv6 needs the brackets).
* ``web[01:10]`` expands numerically, keeping zero padding; ``[a:f]`` expands
  letters; ``[1:10:2]`` adds a step; several ranges in one name multiply out.
"""

from __future__ import annotations

import ipaddress
import re
import string

__all__ = ["RangeError", "expand_host_range", "expand_host_pattern", "split_host_port"]


class RangeError(ValueError):
    """A host range like ``web[1:]`` that cannot be expanded."""


_BRACKETED_HOSTPORT = re.compile(r"^\[(.+)\]:([0-9]+)$")
# anything without ':' outside complete [...] groups, then :port
_HOSTPORT = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$")
_ALNUM_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_LABEL = rf"(?:\w|{_ALNUM_RANGE})(?:[\w-]|{_ALNUM_RANGE})*(?<![_-])"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.I | re.UNICODE)


def _is_address(text: str) -> bool:
    if _HOSTNAME.match(text):
        return True
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def split_host_port(text: str) -> tuple[str, int | None]:
    """Split ``host:port`` / ``[host]:port``; raise ValueError if not a host identifier."""
    port: int | None = None
    host = text
    for regex in (_BRACKETED_HOSTPORT, _HOSTPORT):
        m = regex.match(host)
        if m:
            host, port = m.group(1), int(m.group(2))
    if not _is_address(host):
        raise ValueError(f"not a valid network hostname: {text}")
    return host, port


def expand_host_range(pattern: str) -> list[str]:
    """Expand every ``[begin:end(:step)]`` in *pattern* (left to right)."""
    if "[" not in pattern:
        return [pattern]
    head, sep, rest = pattern.partition("[")
    body, sep2, tail = rest.partition("]")
    if not sep2:
        raise RangeError(f"unterminated host range in {pattern!r}")
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise RangeError(f"host range [{body}] must be begin:end or begin:end:step")
    beg, end = bounds[0] or "0", bounds[1]
    if not end:
        raise RangeError(f"host range [{body}] must specify an end value")
    try:
        step = int(bounds[2]) if len(bounds) == 3 else 1
    except ValueError:
        raise RangeError(f"host range [{body}] has a non-numeric step") from None
    if step <= 0:
        raise RangeError(f"host range [{body}] must have a positive step")
    width = 0
    if beg[0] == "0" and len(beg) > 1:
        width = len(beg)
        if width != len(end):
            raise RangeError(f"host range [{body}] must use equal-length begin and end")
    letters = string.ascii_letters
    if len(beg) == 1 and len(end) == 1 and beg in letters and end in letters:
        i_beg, i_end = letters.index(beg), letters.index(end)
        if i_beg > i_end:
            raise RangeError(f"host range [{body}] must have begin <= end")
        seq: list[str] = list(letters[i_beg : i_end + 1 : step])
    else:
        try:
            i_beg, i_end = int(beg), int(end)
        except ValueError:
            raise RangeError(
                f"host range [{body}] is neither numeric nor a single letter"
            ) from None
        if i_beg > i_end:
            raise RangeError(f"host range [{body}] must have begin <= end")
        seq = [str(i).zfill(width) for i in range(i_beg, i_end + 1, step)]
    out: list[str] = []
    for item in seq:
        out.extend(expand_host_range(f"{head}{item}{tail}"))
    return out


def expand_host_pattern(pattern: str) -> tuple[list[str], int | None]:
    """``web[1:3]:2222`` -> (['web1', 'web2', 'web3'], 2222)."""
    try:
        base, port = split_host_port(pattern)
    except ValueError:
        base, port = pattern, None
    return expand_host_range(base), port
