"""Allow and deny lists: users, devices, payment fingerprints and IP prefixes (CIDR), each entry
with an expiry and a reason, in a text file loaded into a compact structure.

```text
# action   kind     value            expires               reason (the rest of the line)
deny       user     u-000417         2027-01-01T00:00:00Z  chargeback ring, case 12
allow      device   d-qa-1           never                 QA device
deny       ip       203.0.113.0/24   2026-12-31            hosting range used by bots
deny:abnormal_click ip 198.51.100.7  never                 scraper
deny       payment  pm-3f9a          2027-03-01            stolen card
```

`action` is `allow` or `deny` (`deny:<alert type>` raises that type; plain `deny` raises
`fraud`); `kind` is `user` (the event's `user_id`), `device` (`device_id`), `payment`
(`payment_method`) or `ip` (an address or a CIDR prefix, IPv4 or IPv6, host bits zero);
`expires` is RFC 3339 with an offset, a date (`YYYY-MM-DD`, midnight UTC) or `never`; the entry
holds while `now < expires`. The reason is required. Values hold no whitespace. A line that
breaks any of this refuses the whole file, naming the file, the line and the reason.

In memory an entry is a 64-bit hash of its kind and value, its expiry, its line and an index
into the file's distinct reasons: 28 bytes an entry in sorted numpy arrays, so a lookup is
a binary search (docs/benchmarks.md, "Allow and deny lists", has the measured figures). Two
entries of one action, kind and value keep the later expiry. IP prefixes are kept per prefix
length: an address is looked up once per length present in the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import os
import socket
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, Literal, cast

import numpy as np
import numpy.typing as npt

from events import LABELS, Event, format_ts_ms, parse_ts_ms
from events.contract import AlertType
from stream.exceptions import RulesError

__all__ = [
    "ACTIONS",
    "KINDS",
    "NEVER_MS",
    "Entry",
    "Hit",
    "ListSet",
    "edit_lists",
    "load_lists",
    "parse_entry",
    "parse_expiry",
    "parse_lists",
]

Action = Literal["allow", "deny"]
Kind = Literal["user", "device", "payment", "ip"]
ACTIONS: Final[tuple[Action, ...]] = ("allow", "deny")
KINDS: Final[tuple[Kind, ...]] = ("user", "device", "payment", "ip")
#: The event field each kind is looked up by.
FIELD_OF: Final[dict[str, str]] = {
    "user": "user_id", "device": "device_id", "payment": "payment_method", "ip": "ip",
}  # fmt: skip
_PLAIN_KINDS: Final = frozenset(("user", "device", "payment"))
_KIND_INDEX: Final[dict[str, int]] = {k: i for i, k in enumerate(KINDS)}
_LOOKED_UP: Final = (("user", "user_id"), ("device", "device_id"), ("payment", "payment_method"))
#: The expiry of an entry that never expires.
NEVER_MS: Final = np.iinfo(np.int64).max
_MAX_VALUE_CHARS: Final = 256
_MAX_REASON_CHARS: Final = 1000

K64 = npt.NDArray[np.int64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]


# Keys are Python's own (SipHash, 64-bit) hash of a tuple: the table is built and searched in
# one process, so the per-process seed does not matter, and it costs ~0.1 µs where blake2b cost
# ~1 µs. Two values of 10**6 entries share a key with odds of ~3e-8 in all.


def _hash(kind: str, value: str) -> int:
    return hash((kind, value))  # a signed 64-bit int: numpy's int64 as it is


def _net_hash(version: int, length: int, network: int) -> int:
    return hash(("ip", version, length, network))


def parse_expiry(text: str) -> int:
    """Epoch ms of an expiry: RFC 3339 with an offset, `YYYY-MM-DD` (midnight UTC) or `never`.

    >>> parse_expiry("2027-01-01") == parse_expiry("2027-01-01T00:00:00Z")
    True
    >>> parse_expiry("never") == NEVER_MS
    True
    """
    if text == "never":
        return int(NEVER_MS)
    if len(text) == 10:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"expiry {text!r}: not a date (YYYY-MM-DD)") from None
        return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    try:
        return parse_ts_ms(text)
    except ValueError as exc:
        raise ValueError(
            f"expiry {text!r}: must be RFC 3339 with an offset, YYYY-MM-DD or never ({exc})"
        ) from None


@dataclass(frozen=True)
class Entry:
    """One line of a lists file."""

    action: Action
    kind: Kind
    value: str  # for `ip`, the normalised prefix (e.g. 203.0.113.0/24)
    expires_ms: int  # NEVER_MS: never
    reason: str
    alert_type: AlertType = "fraud"  # what a deny hit raises
    line: int = 0

    def text(self) -> str:
        """The entry as a line of the file."""
        action = self.action if self.alert_type == "fraud" else f"deny:{self.alert_type}"
        expires = "never" if self.expires_ms == NEVER_MS else format_ts_ms(self.expires_ms)
        return f"{action}\t{self.kind}\t{self.value}\t{expires}\t{self.reason}"


def _normal_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"invalid CIDR {value!r} ({exc})") from None


def parse_entry(text: str, line: int = 0) -> Entry | None:
    """One line: an `Entry`, None for a blank or comment line; ValueError with the reason."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    parts = stripped.split(None, 4)
    if len(parts) < 5:
        raise ValueError("needs 5 fields: action kind value expires reason")
    action_text, kind, value, expires, reason = parts
    action, _, alert = action_text.partition(":")
    if action not in ACTIONS:
        raise ValueError(f"action {action_text!r}: must be allow, deny or deny:<alert type>")
    if alert and (action != "deny" or alert not in LABELS):
        raise ValueError(f"action {action_text!r}: deny:<type> takes {' or '.join(LABELS)}")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: must be one of {', '.join(KINDS)}")
    if len(value) > _MAX_VALUE_CHARS:
        raise ValueError(f"value: longer than {_MAX_VALUE_CHARS} characters")
    if kind == "ip":
        value = _normal_ip(value)
    reason = reason.strip()
    if len(reason) > _MAX_REASON_CHARS:
        raise ValueError(f"reason: longer than {_MAX_REASON_CHARS} characters")
    alert_type: AlertType = "abnormal_click" if alert == "abnormal_click" else "fraud"
    return Entry(action, kind, value, parse_expiry(expires), reason, alert_type, line)


@dataclass(frozen=True)
class Hit:
    """A list entry that matched an event."""

    action: Action
    kind: Kind
    value: str  # the event's value (for `ip`: the address, and `prefix` the entry)
    expires_ms: int
    reason: str
    alert_type: AlertType
    source: str
    line: int
    prefix: str | None = None

    def describe(self) -> str:
        """One line for an alert's reason (or a log line)."""
        what = {"user": "user", "device": "device", "payment": "payment method", "ip": "IP"}
        expires = "never expires" if self.expires_ms == NEVER_MS else (
            f"until {format_ts_ms(self.expires_ms)}"
        )  # fmt: skip
        via = f" (in {self.prefix})" if self.prefix else ""
        return (
            f"{what[self.kind]} {self.value}{via} is on the {self.action} list "
            f"({self.source}:{self.line}, {expires}): {self.reason}"
        )


@dataclass
class _Columns:
    """Entries being read, column by column (compact while a large file is parsed)."""

    hashes: array[int] = field(default_factory=lambda: array("q"))
    expires: array[int] = field(default_factory=lambda: array("q"))
    lines: array[int] = field(default_factory=lambda: array("i"))
    reasons: array[int] = field(default_factory=lambda: array("i"))
    kinds: array[int] = field(default_factory=lambda: array("b"))
    types: array[int] = field(default_factory=lambda: array("b"))
    files: array[int] = field(default_factory=lambda: array("h"))

    def add(self, key: int, entry: Entry, reason: int, file: int) -> None:
        self.hashes.append(key)
        self.expires.append(entry.expires_ms)
        self.lines.append(entry.line)
        self.reasons.append(reason)
        self.kinds.append(KINDS.index(entry.kind))
        self.types.append(LABELS.index(entry.alert_type))
        self.files.append(file)


@dataclass
class _Table:
    """One action's entries, sorted by hash."""

    hashes: K64
    expires: I64
    lines: I32
    reasons: I32
    kinds: npt.NDArray[np.int8]
    types: npt.NDArray[np.int8]
    files: npt.NDArray[np.int16]

    @classmethod
    def build(cls, cols: _Columns) -> _Table:
        hashes = np.frombuffer(cols.hashes, dtype=np.int64)
        expires = np.frombuffer(cols.expires, dtype=np.int64)
        order = np.lexsort((expires, hashes))  # by hash, then expiry: the last of a run wins
        hashes, expires = hashes[order], expires[order]
        keep = np.ones(len(hashes), dtype=bool)
        keep[:-1] = hashes[1:] != hashes[:-1]
        idx = order[keep]

        def col(values: array[int], dtype: type[np.generic]) -> npt.NDArray[Any]:
            return np.frombuffer(values, dtype=dtype)[idx].copy()

        return cls(hashes[keep].copy(), expires[keep].copy(), col(cols.lines, np.int32),
                   col(cols.reasons, np.int32), col(cols.kinds, np.int8),
                   col(cols.types, np.int8), col(cols.files, np.int16))  # fmt: skip

    def __len__(self) -> int:
        return len(self.hashes)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.hashes, self.expires, self.lines, self.reasons,
                                      self.kinds, self.types, self.files))  # fmt: skip

    def find(self, keys: Sequence[int], now_ms: int) -> npt.NDArray[np.int64]:
        """Index of each key's live entry, -1 where none."""
        if not len(self.hashes) or not keys:
            return np.full(len(keys), -1, dtype=np.int64)
        wanted = np.array(keys, dtype=np.int64)
        pos = np.searchsorted(self.hashes, wanted)
        pos = np.minimum(pos, len(self.hashes) - 1)
        ok = (self.hashes[pos] == wanted) & (self.expires[pos] > now_ms)
        return np.where(ok, pos, -1).astype(np.int64)


@dataclass
class ListSet:
    """Allow and deny entries of one or more lists files, as compact sorted arrays."""

    version: str = "lists-none"
    sources: tuple[str, ...] = ()
    entries: int = 0
    reasons: list[str] = field(default_factory=list)
    tables: dict[str, _Table] = field(default_factory=dict)  # action → table
    # IP prefix lengths present per (action, IP version), longest first
    net_lengths: dict[tuple[str, int], tuple[int, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.entries > 0

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays (the reasons' strings not counted)."""
        return sum(t.nbytes for t in self.tables.values())

    def lookup(self, events: Sequence[Event], now_ms: int) -> list[tuple[Hit | None, Hit | None]]:
        """Per event, its (deny, allow) hit; None where no live entry matches. Of several
        matches the first in the order user, device, payment, IP (longest prefix) is given."""
        out: list[list[Hit | None]] = [[None, None] for _ in events]
        if not self.entries:
            return [(None, None) for _ in events]
        # Keys are the same for both actions: computed once (only the IP prefix lengths
        # present in either list), then searched in each action's table.
        keys: list[int] = []
        owners: list[tuple[int, str, str | int, int]] = []  # event, kind, value, prefix length
        lengths = {v: sorted({n for (_a, ver), ls in self.net_lengths.items() if ver == v
                              for n in ls}, reverse=True) for v in (4, 6)}  # fmt: skip
        for i, ev in enumerate(events):
            for kind, name in _LOOKED_UP:
                value = getattr(ev, name)
                if value is not None:
                    keys.append(_hash(kind, value))
                    owners.append((i, kind, value, -1))
            version = 6 if ev.ip and ":" in ev.ip else 4
            if ev.ip and lengths[version]:
                whole = _ip_int(ev.ip, version)
                if whole is not None:
                    top = 128 if version == 6 else 32
                    for length in lengths[version]:
                        bits = top - length
                        keys.append(_net_hash(version, length, (whole >> bits) << bits))
                        owners.append((i, "ip", whole, length))
        for a, action in enumerate(("deny", "allow")):
            table = self.tables.get(action)
            if table is None or not len(table):
                continue
            found = table.find(keys, now_ms)
            for o in np.flatnonzero(found >= 0).tolist():
                i, kind, seen, length = owners[o]
                if out[i][a] is not None:
                    continue
                pos = int(found[o])
                prefix = None
                if length >= 0:  # an IP prefix: the address and the prefix, as text
                    assert isinstance(seen, int)
                    ip = ipaddress.ip_address(events[i].ip or "")
                    bits = ip.max_prefixlen - length
                    prefix = f"{type(ip)((seen >> bits) << bits)}/{length}"
                    seen = str(ip)
                out[i][a] = Hit(
                    cast(Action, action), cast(Kind, kind), str(seen), int(table.expires[pos]),
                    self.reasons[int(table.reasons[pos])], LABELS[int(table.types[pos])],
                    self.sources[int(table.files[pos])], int(table.lines[pos]), prefix,
                )  # fmt: skip
        return [(d, al) for d, al in out]


def _ip_int(value: str, version: int) -> int | None:
    """The address as an integer (None when it is not one): inet_pton, 10× `ipaddress`."""
    try:
        packed = socket.inet_pton(socket.AF_INET6 if version == 6 else socket.AF_INET, value)
    except OSError:
        return None
    return int.from_bytes(packed, "big")


def _entries(text: str, source: str) -> Iterator[Entry]:
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            entry = parse_entry(line, lineno)
        except ValueError as exc:
            raise RulesError(f"{source}:{lineno}: {exc}") from None
        if entry is not None:
            yield entry


def parse_lists(files: Sequence[tuple[str, bytes]]) -> ListSet:
    """The entries of every `(source, bytes)` given; `RulesError` naming the file, the line and
    the reason at the first bad line."""
    cols = {a: _Columns() for a in ACTIONS}
    lengths: dict[tuple[str, int], set[int]] = {}
    reasons: dict[str, int] = {}
    digest = hashlib.sha256()
    count = 0
    expiries: dict[str, int] = {}
    for f, (source, raw) in enumerate(files):
        digest.update(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = raw[: exc.start].count(b"\n") + 1
            raise RulesError(f"{source}:{bad}: not UTF-8 text") from None
        for lineno, line in enumerate(text.splitlines(), 1):
            parts = line.split(None, 4)
            if not parts or parts[0].startswith("#"):
                continue
            # the common line checked inline (a million of them: ~2 µs each); anything else,
            # and every error, through parse_entry
            if (len(parts) == 5 and parts[0] in ACTIONS and parts[1] in _PLAIN_KINDS
                    and len(parts[2]) <= _MAX_VALUE_CHARS
                    and len(parts[4]) <= _MAX_REASON_CHARS):  # fmt: skip
                expires = expiries.get(parts[3])
                if expires is None:
                    try:
                        expires = expiries[parts[3]] = parse_expiry(parts[3])
                    except ValueError as exc:
                        raise RulesError(f"{source}:{lineno}: {exc}") from None
                reason = parts[4].strip()
                r = reasons.setdefault(reason, len(reasons))
                c = cols[parts[0]]
                c.hashes.append(_hash(parts[1], parts[2]))
                c.expires.append(expires)
                c.lines.append(lineno)
                c.reasons.append(r)
                c.kinds.append(_KIND_INDEX[parts[1]])
                c.types.append(0)
                c.files.append(f)
                count += 1
                continue
            try:
                e = parse_entry(line, lineno)
            except ValueError as exc:
                raise RulesError(f"{source}:{lineno}: {exc}") from None
            if e is None:
                continue
            if e.kind == "ip":
                net = ipaddress.ip_network(e.value)
                key = _net_hash(net.version, net.prefixlen, int(net.network_address))
                lengths.setdefault((e.action, net.version), set()).add(net.prefixlen)
            else:
                key = _hash(e.kind, e.value)
            cols[e.action].add(key, e, reasons.setdefault(e.reason, len(reasons)), f)
            count += 1
    return ListSet(
        version="lists-" + digest.hexdigest()[:12],
        sources=tuple(s for s, _ in files),
        entries=count,
        reasons=list(reasons),
        tables={a: _Table.build(c) for a, c in cols.items()},
        net_lengths={k: tuple(sorted(v, reverse=True)) for k, v in lengths.items()},
    )


def load_lists(paths: Iterable[Path]) -> ListSet:
    """Read and parse lists files (`RulesError` naming the file when one cannot be read)."""
    files = []
    for path in paths:
        try:
            files.append((str(path), path.read_bytes()))
        except OSError as exc:
            raise RulesError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    return parse_lists(files)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def edit_lists(
    path: Path,
    add: Sequence[Entry] = (),
    remove: Sequence[tuple[Action, Kind, str]] = (),
) -> int:
    """Add entries to a lists file and remove every line of the given (action, kind, value),
    atomically (a temporary file renamed over it, under a lock: the worker never reads half a
    file, two editors never lose each other's change). The number of lines removed.

    The file as written must parse: `RulesError` otherwise, and nothing changes."""
    with _locked(path):
        try:
            old = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            old = ""
        drop = {(a, k, _normal_ip(v) if k == "ip" else v) for a, k, v in remove}
        kept: list[str] = []
        removed = 0
        for lineno, line in enumerate(old.splitlines(), 1):
            try:
                entry = parse_entry(line, lineno)
            except ValueError:
                entry = None  # a bad line stays: the check below names it
            if entry is not None and (entry.action, entry.kind, entry.value) in drop:
                removed += 1
                continue
            kept.append(line)
        kept += [e.text() for e in add]
        text = "\n".join(kept) + "\n"
        parse_lists([(str(path), text.encode())])  # refuse before writing
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            with contextlib.suppress(OSError):
                os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return removed
