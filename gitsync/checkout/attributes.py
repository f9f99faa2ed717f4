"""``.gitattributes`` conversions on checkout, as git 2.39 makes them on Linux with default config.

With ``core.autocrlf`` unset and ``core.eol`` native (LF), git changes a blob on checkout only
for line endings pinned to CRLF (``eol=crlf``, or the legacy ``crlf``/``text`` values with it),
``ident`` and ``working-tree-encoding``. Filters need programs git-sync's image does not have,
so their blobs are written as stored, as git does without a configured driver; with ``--lfs``
the ``filter`` attribute is looked up too (``Attributes.with_filter``), for lfs.py, which does
git-lfs's smudge itself. Everything here follows git's attr.c and convert.c rather than the documentation,
because real repositories depend on the corners:

* Files are parsed as git reads them from the index: bytes, lines cut at ``\\n``, everything
  after a NUL ignored, no BOM stripped, C-quoted patterns, a line with an invalid attribute
  name (a non-ASCII one, say) dropped whole with git's warning instead of failing the sync.
* ``[attr]`` macros count only in the top-level file; ``binary`` is built in. Lookup is git's
  ``fill``: deepest file first, last line first, first value wins, a macro set to true expands
  where it is set.
* Whether ``text=auto`` content is text is git's ``gather_stats`` over the whole blob: a NUL
  anywhere, any CR, or more than one non-printable byte in 128 printable ones leaves it alone.
* git converts in memory (``ident_to_worktree``) when the action is ``text=auto`` or an
  encoding is set, and through its streaming filters otherwise; the two disagree on foreign
  ``$Id: ... $`` keywords, so both are here.

Conversions run over chunks with a bounded carry, so a big blob is converted as it is
inflated: memory stays bounded whatever the content (a long ``$Id:`` span spills to an
unnamed temporary file).
"""

from __future__ import annotations

import codecs
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import IO

from dulwich.attrs import Pattern
from dulwich.wildmatch import MalformedPattern

from gitsync import log
from gitsync.errors import UnsafeTree

Value = bytes | bool | None  # None: git's "unspecified" (``!name``)
State = tuple[bytes, Value]

MAX_FILE_SIZE = 100 << 20  # git ignores a larger attributes blob (ATTR_MAX_FILE_SIZE)
# Bounds of gitsync's own, for hostile repositories: each rule costs a compiled pattern and a
# match per file below it (20,000 rules took 19 MB and 0.2 s per file). Real attribute files
# are far below both; git has no bound short of 100 MiB.
MAX_READ = 4 << 20
MAX_RULES = 2000
_MAX_LINE = 2048  # and longer lines (ATTR_MAX_LINE_LENGTH)
_BLANK = b" \t\r\n"
_TOKEN_END = re.compile(rb"[ \t\r\n]")
_VALID_NAME = re.compile(rb"[A-Za-z0-9_.][-A-Za-z0-9_.]*")
_QUOTE_STOP = re.compile(rb'["\\]')
_ESCAPES = {ord(k): ord(v) for k, v in zip("abfnrtv\\\"", "\a\b\f\n\r\t\v\\\"", strict=True)}
_BUILTIN_MACROS: dict[bytes, tuple[State, ...]] = {
    b"binary": ((b"diff", False), (b"merge", False), (b"text", False)),
}
# The attributes convert.c reads ("filter" needs a configured driver, which gitsync never has).
_CONVERSION_ATTRS = frozenset({b"text", b"crlf", b"eol", b"ident", b"working-tree-encoding"})
# ... and "filter" too, with --lfs (Attributes.with_filter): only then do its rules cost.
_WITH_FILTER = _CONVERSION_ATTRS | {b"filter"}


@dataclass(frozen=True)
class _Rule:
    pattern: Pattern
    states: tuple[State, ...]


def _valid_name(name: bytes) -> bool:
    return _VALID_NAME.fullmatch(name) is not None


def _token(text: bytes) -> int:
    """Length of the leading run of non-blank bytes (strcspn with git's ``blank``)."""
    m = _TOKEN_END.search(text)
    return m.start() if m else len(text)


def _unquote(text: bytes) -> tuple[bytes, bytes] | None:
    """git's unquote_c_style on ``text`` (which starts with ``"``): the pattern and what follows
    the closing quote, or None when the quoting is malformed (then git takes it literally)."""
    out = bytearray()
    i = 1
    while True:
        m = _QUOTE_STOP.search(text, i)
        if m is None:
            return None
        out += text[i:m.start()]
        i = m.start() + 1
        if text[m.start()] == 0x22:  # the closing quote
            return bytes(out), text[i:]
        ch = text[i] if i < len(text) else 0
        i += 1
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0x30 <= ch <= 0x33:
            digits = text[i:i + 2]
            if len(digits) < 2 or not all(0x30 <= d <= 0x37 for d in digits):
                return None
            out.append(((ch - 0x30) << 6) | ((digits[0] - 0x30) << 3) | (digits[1] - 0x30))
            i += 2
        else:
            return None


def _states(text: bytes) -> tuple[State, ...] | None:
    """git's parse_attr over a line's attribute list; None when a name is invalid (git then
    drops the whole line)."""
    out: list[State] = []
    i = 0
    while i < len(text):
        end = i + _token(text[i:])
        equals = text.find(b"=", i, end)
        key = text[i:equals if equals >= 0 else end]
        value: Value
        if key[:1] == b"-":
            key, value = key[1:], False
        elif key[:1] == b"!":
            key, value = key[1:], None
        else:
            value = True if equals < 0 else text[equals + 1:end]
        if not _valid_name(key):
            return None
        out.append((key, value))
        i = end + (len(text) - end - len(text[end:].lstrip(_BLANK)))
    return tuple(out)


def _shown(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def parse(content: bytes, source: str, macros_ok: bool
          ) -> tuple[list[tuple[bytes, tuple[State, ...]]], list[tuple[bytes, tuple[State, ...]]]]:
    """(patterns, macros) of one attributes file, each with its states, in file order.

    Lines git refuses (too long, invalid names, negative patterns, macros below the top level)
    are logged and dropped, as git warns and drops them.
    """
    rules: list[tuple[bytes, tuple[State, ...]]] = []
    macros: list[tuple[bytes, tuple[State, ...]]] = []
    for lineno, line in enumerate(_lines(content), 1):
        text = line.lstrip(_BLANK)
        if not text or text[:1] == b"#":
            continue
        where = f"{source}:{lineno}"
        if len(line) >= _MAX_LINE:
            log.get().warning("ignoring overly long attributes line", where=where)
            continue
        quoted = _unquote(text) if text[:1] == b'"' else None
        if quoted is not None:
            name, rest = quoted
        else:
            n = _token(text)
            name, rest = text[:n], text[n:]
        is_macro = len(name) > 6 and name.startswith(b"[attr]")
        if is_macro:
            if not macros_ok:
                log.get().warning("attribute macro not allowed below the top level",
                                  macro=_shown(name), where=where)
                continue
            name = name[6:].lstrip(_BLANK)
            name = name[:_token(name)]
            if not _valid_name(name):
                log.get().warning("invalid attribute name", name=_shown(name), where=where)
                continue
        states = _states(rest.lstrip(_BLANK))
        if states is None:
            log.get().warning("invalid attribute name, line ignored", where=where)
            continue
        if is_macro:
            macros.append((name, states))
        elif name[:1] == b"!":
            log.get().warning("negative patterns are ignored in git attributes", where=where)
        else:
            rules.append((name.split(b"\0", 1)[0], states))
    return rules, macros


def _lines(content: bytes) -> Iterator[bytes]:
    """The lines git reads: cut at LF, up to the first NUL (one at a time: no list of them)."""
    end = content.find(b"\0")
    end = len(content) if end < 0 else end
    at = 0
    while at < end:
        nl = content.find(b"\n", at, end)
        stop = end if nl < 0 else nl
        yield content[at:stop]
        at = stop + 1


def _relevant(macros: dict[bytes, tuple[State, ...]],
              tracked: frozenset[bytes] = _CONVERSION_ATTRS) -> frozenset[bytes]:
    """The tracked attributes and every macro that sets one, directly or through others."""
    users: dict[bytes, list[bytes]] = {}
    for macro, states in macros.items():
        for name, _ in states:
            users.setdefault(name, []).append(macro)
    found = set(tracked)
    todo = list(found)
    while todo:
        for macro in users.get(todo.pop(), ()):
            if macro not in found:
                found.add(macro)
                todo.append(macro)
    return frozenset(found)


@dataclass(frozen=True)
class Conversion:
    """What git does to one path's blob on checkout."""

    crlf: bool  # LF not preceded by CR becomes CRLF ...
    auto: bool  # ... only when the content is text with no CR in it (text=auto)
    ident: bool
    incore: bool  # git's in-memory conversion (ident_to_worktree), not its streaming filter
    encoding: str | None  # working-tree-encoding, as written


@dataclass(frozen=True)
class Attributes:
    """The rules in effect in one directory; ``Attributes()`` when no ``.gitattributes`` applies."""

    rules: tuple[_Rule, ...] = ()  # outermost file first, each in file order
    macros: dict[bytes, tuple[State, ...]] = field(default_factory=lambda: dict(_BUILTIN_MACROS))
    relevant: frozenset[bytes] = field(default_factory=lambda: _relevant(_BUILTIN_MACROS))
    tracked: frozenset[bytes] = _CONVERSION_ATTRS

    @classmethod
    def with_filter(cls) -> Attributes:
        """The root rules when ``filter`` matters too (--lfs)."""
        return cls(relevant=_relevant(_BUILTIN_MACROS, _WITH_FILTER), tracked=_WITH_FILTER)

    def child(self, base: bytes, content: bytes) -> Attributes:
        """Rules for directory ``base`` (repo-relative, no trailing slash) whose attributes file
        is ``content``."""
        top = base == b""
        source = f"{_shown(base)}/.gitattributes" if base else ".gitattributes"
        patterns, defined = parse(content, source, macros_ok=top)
        macros, relevant = self.macros, self.relevant
        if defined:
            macros = dict(macros)
            for name, states in defined:  # the last definition wins (git's determine_macros)
                macros[name] = states
            relevant = _relevant(macros, self.tracked)
            macros = {k: tuple(s for s in v if s[0] in relevant) for k, v in macros.items()
                      if k in relevant}
        added: list[_Rule] = []
        for pattern, states in patterns:
            kept = tuple(s for s in states if s[0] in relevant)
            if not kept or pattern.endswith(b"/"):  # a directory-only pattern matches no file
                continue
            try:
                added.append(_Rule(Pattern(pattern, base), kept))
            except MalformedPattern:  # git's wildmatch() matches nothing with it
                continue
        rules = self.rules + tuple(added)
        if len(rules) > MAX_RULES:
            raise UnsafeTree(f"{source} brings the line-ending, ident and encoding rules in "
                             f"effect to {len(rules)}, over gitsync's limit of {MAX_RULES}")
        return Attributes(rules, macros, relevant, self.tracked)

    def lookup(self, path: bytes) -> dict[bytes, Value]:
        """The conversion attributes of ``path`` that are set or unspecified (git's fill)."""
        values: dict[bytes, Value] = {}
        for rule in reversed(self.rules):
            if rule.pattern.match(path):
                self._fill(values, rule.states)
        return values

    def _fill(self, values: dict[bytes, Value], states: tuple[State, ...]) -> None:
        """Set each state not yet known, last first; a macro set to true expands in place."""
        stack = [reversed(states)]
        while stack:
            state = next(stack[-1], None)
            if state is None:
                stack.pop()
                continue
            name, value = state
            if name in values:
                continue
            values[name] = value
            if value is True and name in self.macros:
                stack.append(reversed(self.macros[name]))

    def filter(self, path: bytes) -> Value:
        """The ``filter`` attribute of ``path`` (``b"lfs"`` for a git-lfs file)."""
        if not self.rules:
            return None
        return self.lookup(path).get(b"filter")

    @cached_property
    def _converts(self) -> bool:
        """Whether any rule, or a macro one may set, names a value that changes a blob on
        checkout (``eol=crlf``, ``ident``, a ``working-tree-encoding``). Most repositories'
        rules (``* text=auto``, ``*.png binary``) name none, and ``conversion`` then answers
        None without matching every path against them (a tenth of libgit2's checkout)."""
        groups = [rule.states for rule in self.rules] + list(self.macros.values())
        return any((name == b"eol" and value == b"crlf") or (name == b"ident" and value is True)
                   or (name == b"working-tree-encoding" and isinstance(value, bytes))
                   for states in groups for name, value in states)

    def conversion(self, path: bytes) -> Conversion | None:
        """git's convert_attrs and classify_conv_attrs for ``path``; None when the blob is
        written as stored."""
        if not self.rules or not self._converts:
            return None
        values = self.lookup(path)
        if not values:
            return None
        action = _crlf_action(values.get(b"text"))
        if action == "undefined":
            action = _crlf_action(values.get(b"crlf"))
        if action != "binary":
            eol = values.get(b"eol")
            if action == "auto" and eol == b"lf":
                action = "auto-input"
            elif action == "auto" and eol == b"crlf":
                action = "auto-crlf"
            elif eol == b"lf":
                action = "text-input"
            elif eol == b"crlf":
                action = "text-crlf"
        encoding = values.get(b"working-tree-encoding")
        wte = _target(encoding) if isinstance(encoding, bytes) else None
        conv = Conversion(crlf=action in ("text-crlf", "auto-crlf"),
                          auto=action == "auto-crlf",
                          ident=values.get(b"ident") is True,
                          incore=action in ("auto", "auto-crlf") or wte is not None,
                          encoding=wte)
        if not (conv.crlf or conv.ident or conv.encoding):
            return None
        return conv


def _crlf_action(value: Value) -> str:
    """git's git_path_check_crlf, for ``text`` and the legacy ``crlf``."""
    if value is True:
        return "text"
    if value is False:
        return "binary"
    if value == b"input":
        return "text-input"
    if value == b"auto":
        return "auto"
    return "undefined"


def _is_utf8(name: str) -> bool:
    return name.lower() in ("utf-8", "utf8")


def _target(raw: bytes) -> str | None:
    """A working-tree-encoding worth applying: not empty, not UTF-8 (git skips both)."""
    name = raw.decode("latin-1")
    return None if not name or _is_utf8(name) else name


# ----- conversions ---------------------------------------------------------------------------

Source = Callable[[], Iterator[bytes]]  # the blob's bytes, from the start, each time it is called


class _Unencodable(Exception):
    """The content cannot be re-encoded (git writes it as it is, after an error message)."""


def convert(data: bytes, conv: Conversion, sha: bytes) -> bytes:
    """The bytes git writes for blob ``sha`` whose content is ``data``."""
    out = bytearray()

    def write(chunk: bytes) -> None:
        out.extend(chunk)

    def restart() -> None:
        del out[:]

    write_converted(lambda: iter((data,)), conv, sha, write, restart, None)
    return bytes(out)


def write_converted(source: Source, conv: Conversion, sha: bytes, write: Callable[[bytes], None],
                    restart: Callable[[], None], spill_dir: str | None) -> None:
    """Feed git's worktree form of the blob to ``write``, in chunks.

    ``text=auto`` reads the blob twice (once to decide whether it is text, stopping at the first
    CR or NUL), and a failed re-encoding starts over (``restart``) and writes it unencoded.
    """
    crlf = conv.crlf
    if crlf and conv.auto:
        crlf = _is_convertible_text(_idented(source(), conv, sha, spill_dir))
    encoding = conv.encoding
    if encoding is not None:
        try:
            _encoder(encoding)
        except LookupError:
            log.get().warning("unknown working-tree-encoding, blob written as stored",
                              encoding=encoding, blob=sha.decode())
            encoding = None
    try:
        for chunk in _pipeline(source(), conv, sha, crlf, encoding, spill_dir):
            write(chunk)
    except _Unencodable as e:
        log.get().warning("cannot re-encode blob, written as stored", blob=sha.decode(),
                          encoding=encoding, error=str(e))
        restart()
        for chunk in _pipeline(source(), conv, sha, crlf, None, spill_dir):
            write(chunk)


def _idented(chunks: Iterator[bytes], conv: Conversion, sha: bytes,
             spill_dir: str | None) -> Iterator[bytes]:
    if not conv.ident:
        return chunks
    return _ident(chunks, sha, conv.incore, spill_dir)


def _pipeline(chunks: Iterator[bytes], conv: Conversion, sha: bytes, crlf: bool,
              encoding: str | None, spill_dir: str | None) -> Iterator[bytes]:
    """ident, then line endings, then encoding: convert_to_working_tree's order."""
    out = _idented(chunks, conv, sha, spill_dir)
    if crlf:
        out = _lf_to_crlf(out)
    if encoding is not None:
        out = _encode(out, encoding)
    return out


def _lf_to_crlf(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Every LF not already after a CR gets one (crlf_to_worktree and lf_to_crlf_filter agree)."""
    after_cr = False
    for chunk in chunks:
        if not chunk:
            continue
        head, body = (b"\n", chunk[1:]) if after_cr and chunk[:1] == b"\n" else (b"", chunk)
        after_cr = chunk[-1:] == b"\r"
        yield head + body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# Bytes gather_stats counts as non-printable: controls but BS, HT, LF, FF, CR, ESC; and DEL.
_NONPRINTABLE = bytes(c for c in range(32) if c not in (8, 9, 10, 12, 13, 27)) + b"\x7f"


def _is_convertible_text(chunks: Iterator[bytes]) -> bool:
    """will_convert_lf_to_crlf for text=auto: some LF, no CR at all (lone or in CRLF), and not
    binary by convert_is_binary (no NUL; printable bytes / 128 >= non-printable ones; a final
    ^Z is not counted)."""
    lf = printable = nonprintable = 0
    last = b""
    try:
        for chunk in chunks:
            if not chunk:
                continue
            if b"\r" in chunk or b"\0" in chunk:
                return False
            nonp = len(chunk) - len(chunk.translate(None, _NONPRINTABLE))
            newlines = chunk.count(b"\n")
            lf += newlines
            nonprintable += nonp
            printable += len(chunk) - nonp - newlines
            last = chunk[-1:]
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if last == b"\x1a":
        nonprintable -= 1
    return lf > 0 and (printable >> 7) >= nonprintable


def _encoder(name: str) -> tuple[codecs.IncrementalEncoder, bytes]:
    """An encoder for git's working-tree-encoding ``name`` and the BOM written before its output.

    iconv's UTF-16 and UTF-32 write a BOM and the machine's byte order, as Python's do; git adds
    the BOM itself for its own UTF-16LE-BOM and UTF-16BE-BOM. A name Python does not know as a
    text encoding raises LookupError (git: iconv_open fails, the blob is written as stored).
    """
    bom = b""
    key = name.lower().replace("-", "").replace("_", "")
    if key == "utf16lebom":
        name, bom = "utf-16-le", codecs.BOM_UTF16_LE
    elif key == "utf16bebom":
        name, bom = "utf-16-be", codecs.BOM_UTF16_BE
    "".encode(name)  # LookupError for unknown and non-text codecs (rot13, zlib, ...)
    return codecs.getincrementalencoder(name)("strict"), bom


def _encode(chunks: Iterable[bytes], name: str) -> Iterator[bytes]:
    """UTF-8 to ``name``; empty content stays empty (git: nothing to encode)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    encoder, bom = _encoder(name)
    started = False
    try:
        for chunk in chunks:
            text = decoder.decode(chunk)
            if text:
                out = encoder.encode(text)
                if not started:
                    out, started = bom + out, True
                yield out
        text = decoder.decode(b"", final=True)
        tail = encoder.encode(text, final=True) if (started or text) else b""
        if tail and not started:
            tail = bom + tail
        yield tail
    except UnicodeError as e:
        raise _Unencodable(str(e)) from None


# ----- ident ---------------------------------------------------------------------------------

_SPILL_ABOVE = 1 << 20
_SPAN_END = re.compile(rb"[$\n]")
_SPACE = re.compile(rb"[ \t\r]")  # git's isspace, but LF (which ends a span)


class _Held:
    """Bytes held back until git's keyword scan decides what becomes of them.

    Past 1 MiB they go to an unnamed temporary file in ``spill_dir`` when there is one (a
    streamed blob), so memory stays bounded whatever the blob holds.
    """

    def __init__(self, spill_dir: str | None) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.file: IO[bytes] | None = None
        self.spill_dir = spill_dir

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.file is not None:
            self.file.write(piece)
        elif self.spill_dir is not None and self.size > _SPILL_ABOVE:
            # Closed by close(), which every path out of the scanners reaches.
            self.file = tempfile.TemporaryFile(dir=self.spill_dir)  # noqa: SIM115
            for part in self.parts:
                self.file.write(part)
            self.file.write(piece)
            self.parts = []
        else:
            self.parts.append(piece)

    def chunks(self) -> Iterator[bytes]:
        if self.file is None:
            yield from self.parts
        else:
            self.file.seek(0)
            while chunk := self.file.read(_SPILL_ABOVE):
                yield chunk
        self.close()

    def close(self) -> None:
        self.parts = []
        self.size = 0
        if self.file is not None:
            self.file.close()
            self.file = None


class _Span(_Held):
    """The bytes after ``$Id:``, with git's two foreign-keyword tests kept up as they grow:
    ident_to_worktree's (a space after the first byte and before the last) and the streaming
    filter's is_foreign_ident (``$Id: `` then whitespace followed by anything but the closing
    ``$``, read as a C string: it stops at a NUL)."""

    def __init__(self, spill_dir: str | None) -> None:
        super().__init__(spill_dir)
        self.incore_foreign = False
        self._space_last = False
        self.first_space = False
        self.stream_foreign = False
        self._ws_last = False
        self._stopped = False

    def add(self, piece: bytes) -> None:
        if not piece:
            return
        n = self.size
        if self._space_last or b" " in piece[1 if n == 0 else 0:-1]:
            self.incore_foreign = True
        self._space_last = piece[-1] == 0x20 and n + len(piece) > 1
        rest = piece
        if n == 0:
            self.first_space = piece[0] == 0x20
            rest = piece[1:]
        if not self._stopped and rest:
            nul = rest.find(b"\0")
            seg = rest if nul < 0 else rest[:nul]
            if seg:
                if self._ws_last or _SPACE.search(seg, 0, len(seg) - 1):
                    self.stream_foreign = True
                self._ws_last = seg[-1] in b" \t\r"
            if nul >= 0:
                if self._ws_last:
                    self.stream_foreign = True
                self._stopped = True
        super().add(piece)


def _ident(chunks: Iterable[bytes], sha: bytes, incore: bool,
           spill_dir: str | None) -> Iterator[bytes]:
    """``$Id$`` and ``$Id: ... $`` become ``$Id: <sha> $``, as git's ident_to_worktree
    (``incore``) or its streaming ident filter does."""
    scan = _ident_incore if incore else _ident_stream
    return scan(chunks, b"$Id: " + sha + b" $", spill_dir)


def _ident_incore(chunks: Iterable[bytes], expanded: bytes,
                  spill_dir: str | None) -> Iterator[bytes]:
    """ident_to_worktree: after a mismatch the scan resumes right after the ``$`` (``$$Id$``
    is expanded); a keyword running into a LF is kept; one with a space inside is kept and
    its closing ``$`` scanned again."""
    head = b""  # "$", "$I" or "$Id" matched so far
    span: _Span | None = None
    try:
        for chunk in chunks:
            i, n = 0, len(chunk)
            while i < n:
                if span is not None:
                    m = _SPAN_END.search(chunk, i)
                    if m is None:
                        span.add(chunk[i:])
                        break
                    span.add(chunk[i:m.start()])
                    i = m.start()
                    if chunk[i] == 0x0A or span.incore_foreign:  # kept; this byte scanned again
                        yield b"$Id:"
                        yield from span.chunks()
                    else:
                        yield expanded
                        i += 1
                    span = None
                elif head:
                    ch = chunk[i:i + 1]
                    if len(head) < 3 and ch == b"$Id"[len(head):len(head) + 1]:
                        head += ch
                        i += 1
                        continue
                    if len(head) == 3 and ch == b"$":
                        yield expanded
                        i += 1
                    elif len(head) == 3 and ch == b":":
                        span = _Span(spill_dir)
                        i += 1
                    else:
                        yield head
                    head = b""
                else:
                    j = chunk.find(b"$", i)
                    if j < 0:
                        yield chunk[i:] if i else chunk
                        break
                    if j > i:
                        yield chunk[i:j]
                    head = b"$"
                    i = j + 1
        if head:
            yield head
        if span is not None:
            yield b"$Id:"
            yield from span.chunks()
    finally:
        if span is not None:
            span.close()


def _ident_stream(chunks: Iterable[bytes], expanded: bytes,
                  spill_dir: str | None) -> Iterator[bytes]:
    """git's streaming ident filter, quirks included: a mismatching byte is passed over, not
    scanned again; ``$Id`` followed by another byte is held (``left``) rather than written,
    and when the held bytes run into a ``$Id:...$`` keyword they are replaced with it; a
    keyword is kept when it reads ``$Id: `` and has whitespace inside."""
    head = b""
    held = _Held(spill_dir)  # git's "left" while its state is 0
    span: _Span | None = None
    try:
        for chunk in chunks:
            i, n = 0, len(chunk)
            while i < n:
                if span is not None:
                    m = _SPAN_END.search(chunk, i)
                    if m is None:
                        span.add(chunk[i:])
                        break
                    span.add(chunk[i:m.start()])
                    i = m.start() + 1
                    if chunk[i - 1] == 0x0A:
                        yield from held.chunks()
                        yield b"$Id:"
                        yield from span.chunks()
                        yield b"\n"
                    elif not held.size and span.first_space and span.stream_foreign:
                        yield b"$Id:"
                        yield from span.chunks()
                        yield b"$"
                    else:  # held bytes start with "$Id" but no ":": never foreign
                        held.close()
                        span.close()
                        yield expanded
                    span = None
                elif head:
                    ch = chunk[i:i + 1]
                    i += 1
                    if len(head) < 3 and ch == b"$Id"[len(head):len(head) + 1]:
                        head += ch
                        continue
                    if len(head) == 3 and ch == b"$":
                        yield from held.chunks()
                        yield expanded
                    elif len(head) == 3 and ch == b":":
                        span = _Span(spill_dir)
                    elif len(head) == 3:
                        held.add(head + ch)
                    else:
                        yield from held.chunks()
                        yield head + ch
                    head = b""
                else:
                    j = chunk.find(b"$", i)
                    if j < 0:
                        if held.size:
                            yield from held.chunks()
                        yield chunk[i:] if i else chunk
                        break
                    if j > i:
                        if held.size:
                            yield from held.chunks()
                        yield chunk[i:j]
                    head = b"$"
                    i = j + 1
        yield from held.chunks()
        if head:
            yield head
        if span is not None:
            yield b"$Id:"
            yield from span.chunks()
    finally:
        held.close()
        if span is not None:
            span.close()
