"""Loading: turns each file that discovery found (``rag.documents.discovery``) into a Markdown-shaped ``Document``.

Every supported format (Markdown, text, reStructuredText, HTML, PDF, DOCX) is converted to text whose
headings are Markdown headings (``rag.documents.converters``), so that one chunker serves them all; a document also
records its place in the site, the titles of the folders above it (``rag.documents.site_path``). Bad input raises
``LoadError`` with a reason a user can act on; it never stops the caller's other files. Only regular files are
read, their size checked before reading, so a pipe or a link to a device cannot hang or flood it; and what a file
turns into is bounded too (``TextLimits``): its text, includes expanded, may not pass ``RAG_MAX_TEXT_MB`` nor be
more than ``RAG_MAX_EXPANSION`` times the size of the files it is made from.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from rag.config import DEFAULT_MAX_EXPANSION, DEFAULT_MAX_TEXT_MB, Settings
from rag.documents import converters
from rag.documents.access import AccessError, parse_access
from rag.documents.discovery import SourceFile
from rag.documents.doc_status import DocStatus, read_status
from rag.documents.errors import MIB, LoadError, SkippedFile, megabytes, over_limit
from rag.documents.front_matter import FrontMatterError, clip, split_front_matter
from rag.documents.shortcodes import ExpansionError, IncludeBudget, include_reader
from rag.documents.shortcodes import render as render_shortcodes
from rag.documents.site_path import folder_titles

DOC_TYPES = ("reference", "team")
WESTERN_ENCODINGS = ("cp1252", "latin_1", "iso8859_15")
UNICODE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE, whose mark it starts with
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class TextLimits:
    """How much text one file may turn into (``RAG_MAX_TEXT_MB``, ``RAG_MAX_EXPANSION``)."""

    max_chars: int = int(DEFAULT_MAX_TEXT_MB * MIB)
    max_expansion: float = DEFAULT_MAX_EXPANSION

    @classmethod
    def for_settings(cls, settings: Settings) -> TextLimits:
        return cls(settings.max_text_chars, settings.max_expansion)


@dataclass
class Document:
    """One loaded file: Markdown-shaped text plus the metadata every chunk inherits."""

    source: SourceFile
    text: str
    title: str
    doc_type: str
    content_hash: str
    tags: list[str] = field(default_factory=list)
    updated: str = ""
    commit_id: str = ""  # the file's last commit when it lives in a Git working copy (rag.documents.git_dates)
    commit_date: str = ""
    status: DocStatus = field(default_factory=DocStatus)  # superseded, deprecated... (rag.documents.doc_status)
    site: list[str] = field(default_factory=list)  # titles of the folders above the file (rag.documents.site_path)
    access: tuple[str, ...] = ()  # the groups that may read it; () = everyone (rag.documents.access)


def file_hash(path: Path, max_bytes: int) -> str:
    return hashlib.sha256(read_file(path, max_bytes)).hexdigest()


def infer_doc_type(ref: SourceFile) -> str:
    parts = Path(ref.root).parts + Path(ref.relpath).parts
    return "reference" if "references" in parts else "team"


def load(
    ref: SourceFile,
    max_bytes: int,
    doc_type: str | None = None,
    access: tuple[str, ...] = (),
    limits: TextLimits = TextLimits(),
) -> Document:
    """Reads and converts one file. Raises ``LoadError`` with the reason when it cannot. ``access``: the groups
    the ingest restricts it to (``--access``, an upload's group), unless its front matter names its own;
    ``limits``: how much text it may turn into."""
    raw = read_file(ref.path, max_bytes)
    if not raw.strip():
        raise LoadError("empty file")
    suffix = ref.path.suffix.lower()
    meta: dict = {}
    if suffix == ".pdf":
        text, pdf_title = converters.pdf_to_text(raw, limits.max_chars)
        meta["title"] = pdf_title
    elif suffix == ".docx":
        text = converters.docx_to_text(raw, max_bytes)
    else:
        text = decode_text(raw)
        if suffix in (".md", ".markdown"):
            meta, text = _split_front_matter(text)
            if not text.strip():
                raise SkippedFile("only front matter, no text (a site's section page); skipped")
            budget = IncludeBudget(len(text), limits.max_chars, limits.max_expansion)
            try:
                text = render_shortcodes(text, include_reader(_root_folder(ref), ref.path, max_bytes), budget)
            except ExpansionError as error:
                raise LoadError(str(error)) from None
            if not text.strip():
                raise SkippedFile("only shortcodes with nothing to read (a page the site generates); skipped")
        elif suffix in (".html", ".htm"):
            meta["title"] = converters.html_title(text)
            text = converters.html_to_text(text)
            _check_expansion(text, raw, limits)
        elif suffix == ".rst":
            text = converters.rst_to_text(text)
            _check_expansion(text, raw, limits)
    _check_text_size(text, limits)
    if not text.strip():
        raise LoadError("no text content after conversion")
    return Document(
        source=ref,
        text=text,
        title=_scalar(meta, "title") or _first_heading(text) or _title_from_name(ref.path),
        doc_type=doc_type or _front_matter_doc_type(meta) or infer_doc_type(ref),
        content_hash=hashlib.sha256(raw).hexdigest(),
        tags=_tags(meta.get("tags")),
        updated=_scalar(meta, "updated"),
        status=read_status(meta, text),
        site=folder_titles(ref.path, _root_folder(ref), max_bytes),
        access=_front_matter_access(meta) or tuple(access),
    )


def _check_text_size(text: str, limits: TextLimits) -> None:
    if len(text) > limits.max_chars:
        size, limit = over_limit(len(text), limits.max_chars)
        raise LoadError(f"converts to {size} of text, over the {limit} limit (RAG_MAX_TEXT_MB)")


def _check_expansion(text: str, raw: bytes, limits: TextLimits) -> None:
    """HTML and rST convert to less than their own size; markup that multiplies (nested quotes and lists, rST
    substitutions of substitutions) is refused. A page's includes are held to the same rule as they are read
    (``IncludeBudget``); PDF and DOCX, compressed, are held to RAG_MAX_TEXT_MB (and DOCX to its unzipped size)."""
    if len(text) > limits.max_expansion * len(raw) + 4096:  # a few lines of labels on a tiny file are no blow-up
        raise LoadError(
            f"converts to {len(text) / len(raw):.0f} times its own size, over the {limits.max_expansion:g} times "
            "limit (RAG_MAX_EXPANSION)"
        )


def _root_folder(ref: SourceFile) -> Path:
    """The ingested folder ``ref`` was found under (includes are only read from inside it)."""
    return ref.path.parents[len(Path(ref.relpath).parts) - 1]


def _tags(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [tag.strip() for tag in value.split(",") if tag.strip()]
    if isinstance(value, list) and all(isinstance(tag, (str, int, float)) for tag in value):
        return [str(tag) for tag in value]
    raise LoadError(f"front matter 'tags' must be a list or a comma-separated text, not {clip(repr(value))}")


def _scalar(meta: dict, name: str) -> str:
    value = meta.get(name)
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise LoadError(f"front matter '{name}' must be a single value, not {clip(repr(value))}")
    return str(value).strip()


def _front_matter_access(meta: dict) -> tuple[str, ...]:
    try:
        return parse_access(meta.get("access"))
    except AccessError as error:
        raise LoadError(f"front matter 'access': {error}") from None


def _front_matter_doc_type(meta: dict) -> str:
    """Only the doc types searches can filter on; anything else is refused rather than made unfindable."""
    value = _scalar(meta, "doc_type")
    if value and value not in DOC_TYPES:
        raise LoadError(f"front matter doc_type '{value}' is not one of {', '.join(DOC_TYPES)}")
    return value


def read_file(path: Path, max_bytes: int) -> bytes:
    """A regular file's bytes, its size checked before reading: a pipe would block for ever, a device
    (a link to /dev/zero) would never end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO without O_NONBLOCK waits for a writer
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise LoadError("not a regular file (a pipe, device or socket)")
            if info.st_size > max_bytes:
                size, limit = over_limit(info.st_size, max_bytes)
                raise LoadError(f"file is {size}, over the {limit} limit (RAG_MAX_FILE_MB)")
            data = handle.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise LoadError(f"file grew past the {megabytes(max_bytes)} limit while being read (RAG_MAX_FILE_MB)")
            return data
    except PermissionError:
        raise LoadError("permission denied: the file is not readable") from None
    except IsADirectoryError:
        raise LoadError("is a folder, not a file") from None
    except OSError as error:
        raise LoadError(f"cannot read file: {error.strerror or error}") from None


def decode_text(raw: bytes) -> str:
    """UTF-8 when it is, otherwise the detected encoding; binary content is refused."""
    for bom, encoding in UNICODE_BOMS:  # UTF-16/32 text (Windows "Unicode" files) is full of NUL bytes
        if raw.startswith(bom):
            try:
                return raw.decode(encoding)
            except UnicodeDecodeError:
                raise LoadError(f"not valid {encoding} text despite its byte order mark") from None
    if b"\x00" in raw[:8192]:
        raise LoadError("binary content in a text file (NUL bytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    results = from_bytes(raw)
    best = results.best()
    if best is None:
        raise LoadError("not valid text: the encoding could not be detected (binary file?)")
    # The detector's first pick for short Western European text is often a Baltic or Central European
    # code page that turns accents into wrong letters. Windows-1252 (what most legacy Western files
    # are) wins when it reads as cleanly and as coherently as the first pick.
    for match in results:
        if match.chaos <= best.chaos + 0.1 and match.coherence >= best.coherence:
            for encoding in WESTERN_ENCODINGS:
                if encoding in match.could_be_from_charset:
                    try:
                        return raw.decode(encoding)
                    except UnicodeDecodeError:
                        continue
    return str(best)


def _split_front_matter(text: str) -> tuple[dict, str]:
    try:
        return split_front_matter(text)
    except FrontMatterError as error:
        raise LoadError(str(error)) from None


HEADING_LINE = re.compile(r"^#{1,6}[ \t]++(\S[^\n]*+)", re.MULTILINE)


def _first_heading(text: str) -> str:
    """The first Markdown heading's text, without a closing run of "#" (found line by line: the pattern that
    also took off the closing hashes and spaces was cubic on a heading full of spaces)."""
    match = HEADING_LINE.search(text)
    if not match:
        return ""
    heading = match.group(1).rstrip()
    opened = heading.rstrip("#")
    if opened != heading and (not opened or opened[-1] in " \t"):
        heading = opened.rstrip()
    return heading


def _title_from_name(path: Path) -> str:
    return re.sub(r"[-_]+", " ", path.stem).strip().capitalize()
