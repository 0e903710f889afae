"""Converters: turn HTML, reStructuredText, PDF and DOCX into Markdown-shaped text (headings as ``#`` lines).

Each raises ``LoadError`` with a reason a user can act on (an encrypted or scanned PDF, a DOCX that would
inflate past the size limit, a corrupt file); ``rag.documents.loading`` decides which converter a file needs.
"""

from __future__ import annotations

import io
import re

from rag.documents.errors import LoadError, over_limit

PLACEHOLDER_PDF_TITLES = {"untitled", "untitled document", "(anonymous)", "anonymous"}


# html2text indents each level of quotes and lists, so text grows with depth times lines: 56 KB of nested
# blockquotes became 16 MB. Deeper levels are read as this one (no document nests quotes or lists this deep).
MAX_HTML_NESTING = 10
NESTING_TAGS = {"blockquote", "ul", "ol", "dl"}


def html_title(html: str) -> str:
    """The first ``<title>``'s text (found by plain searches: a pattern scanning to ``</title>`` from every
    ``<title>`` would be quadratic on a page of unclosed ones)."""
    opening = re.search(r"<title[^>]*+>", html, re.IGNORECASE)
    if opening is None:
        return ""
    end = html.lower().find("</title>", opening.end())
    return " ".join(html[opening.end() : end].split()) if end >= 0 else ""


# The types that make a <script> a program (HTML's JavaScript MIME types, plus "module" and no type at all);
# importmap, speculationrules and JSON are data. Any other type holding markup is a template.
JAVASCRIPT_TYPES = {
    "",
    "module",
    "text/javascript",
    "application/javascript",
    "application/ecmascript",
    "application/x-ecmascript",
    "application/x-javascript",
    "text/ecmascript",
    "text/javascript1.0",
    "text/javascript1.1",
    "text/javascript1.2",
    "text/javascript1.3",
    "text/javascript1.4",
    "text/javascript1.5",
    "text/jscript",
    "text/livescript",
    "text/x-ecmascript",
    "text/x-javascript",
    "text/babel",
    "text/jsx",
    "text/typescript",
}
DATA_TYPES = {"importmap", "speculationrules"}
SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)
SCRIPT_TYPE = re.compile(r"""\btype\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
MARKUP_TAG = re.compile(r"<[a-zA-Z][\w-]*[\s/>]")


def script_type(attributes: str) -> str:
    match = SCRIPT_TYPE.search(attributes)
    if not match:
        return ""
    value = next(group for group in match.groups() if group is not None)
    return value.split(";")[0].strip().lower()


def is_template(attributes: str, body: str) -> bool:
    """A <script> whose text a browser shows once a template engine renders it (Handlebars, Vue's
    x-template, Underscore's text/template): not a program, not data, and markup inside."""
    kind = script_type(attributes)
    if kind in JAVASCRIPT_TYPES or kind in DATA_TYPES or "json" in kind:
        return False
    return bool(MARKUP_TAG.search(body))


def unwrap_templates(html: str) -> str:
    """Template scripts become plain markup, so they are converted like the page around them; program and
    data scripts stay scripts (html2text drops them)."""

    def replace(match: re.Match[str]) -> str:
        attributes, body = match.group(1), match.group(2)
        return f"<div>{body}</div>" if is_template(attributes, body) else match.group(0)

    return SCRIPT.sub(replace, html)


def html_to_text(html: str) -> str:
    converter = _flat_html2text()
    converter.body_width = 0
    converter.ignore_images = True
    converter.mark_code = False
    return converter.handle(unwrap_templates(html))


def _flat_html2text():
    """An html2text converter that reads quotes and lists nested past MAX_HTML_NESTING as the last level."""
    import html2text

    class Flattening(html2text.HTML2Text):
        depth = 0

        def handle_tag(self, tag, attrs, start):
            if tag in NESTING_TAGS:
                if start:
                    self.depth += 1
                    if self.depth > MAX_HTML_NESTING:
                        return
                else:
                    self.depth = max(0, self.depth - 1)
                    if self.depth >= MAX_HTML_NESTING:
                        return
            super().handle_tag(tag, attrs, start)

    return Flattening()


# docutils reads other files and URLs when a document asks (include, raw :file:/:url:, csv-table :file:): an
# uploaded page could pull any file the server can read into the knowledge base. Those directives are turned
# off, and so are docutils' configuration files (which would be read from the working directory).
RST_SETTINGS = {
    "report_level": 5,
    "halt_level": 5,
    "file_insertion_enabled": False,
    "raw_enabled": False,
    "_disable_config": True,
}


def rst_to_text(source: str) -> str:
    """reStructuredText through docutils' own parser, rendered with Markdown headings."""
    from docutils import nodes
    from docutils.core import publish_doctree

    try:
        tree = publish_doctree(source, settings_overrides=RST_SETTINGS)
    except RecursionError:
        raise LoadError("reStructuredText nested too deeply to read") from None
    out: list[str] = []

    def visit(node: nodes.Node, depth: int) -> None:
        for child in node.children:
            if isinstance(child, nodes.section):
                title = child.next_node(nodes.title)
                out.append("#" * min(depth, 6) + " " + (title.astext() if title else ""))
                visit(child, depth + 1)
            elif isinstance(child, nodes.title):
                if depth == 1:  # document title promoted by docutils
                    out.append("# " + child.astext())
            elif isinstance(child, nodes.literal_block):
                out.append("```\n" + child.astext() + "\n```")
            elif isinstance(child, (nodes.system_message, nodes.comment)):
                continue
            else:
                out.append(child.astext())

    try:
        visit(tree, 1)
    except RecursionError:
        raise LoadError("reStructuredText nested too deeply to read") from None
    return "\n\n".join(part for part in out if part.strip())


def pdf_to_text(raw: bytes, max_chars: int | None = None) -> tuple[str, str]:
    """The text of every page, and the document's title. Pages are read until their text passes ``max_chars``
    (the caller refuses such a file; the rest is not extracted)."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise LoadError("encrypted PDF: a password is required")
            except LoadError:
                raise
            except Exception as error:  # pypdf raises several kinds for unsupported encryption
                raise LoadError(f"encrypted PDF: cannot be decrypted ({error})") from None
        pages: list[str] = []
        size = 0
        for page in reader.pages:
            pages.append(page.extract_text() or "")
            size += len(pages[-1])
            if max_chars is not None and size > max_chars:
                break
        title = (reader.metadata.title if reader.metadata else None) or ""
    except LoadError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as error:
        raise LoadError(f"corrupt PDF: {error}") from None
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise LoadError("PDF has no extractable text (scanned images?)")
    title = str(title).strip()
    if title.lower() in PLACEHOLDER_PDF_TITLES:  # what PDF writers put when nobody set a title
        title = ""
    return text, title


def _check_inflated_size(raw: bytes, max_bytes: int) -> None:
    """A DOCX is a zip: a 1 MB file can hold gigabytes of XML that python-docx would parse whole.
    The sizes its directory declares bound what unzipping can produce (zipfile stops there)."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as package:
            inflated = sum(item.file_size for item in package.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise LoadError(f"corrupt DOCX: {error}") from None
    if inflated > max_bytes:
        size, limit = over_limit(inflated, max_bytes)
        raise LoadError(
            f"DOCX inflates to {size} when unzipped, over the {limit} limit "
            "(RAG_MAX_FILE_MB applies to the unzipped content)"
        )


def docx_to_text(raw: bytes, max_bytes: int) -> str:
    """DOCX paragraphs and tables in document order; Heading styles become Markdown headings."""
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    _check_inflated_size(raw, max_bytes)
    try:
        document = docx.Document(io.BytesIO(raw))
    except Exception as error:  # python-docx surfaces zip, XML and package errors alike
        raise LoadError(f"corrupt DOCX: {error}") from None
    out: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            if not text:
                continue
            style = (block.style.name if block.style is not None else "") or ""
            level = re.match(r"Heading (\d)", style)
            if style == "Title":
                out.append("# " + text)
            elif level:
                out.append("#" * (int(level.group(1)) + (1 if _has_title(document) else 0)) + " " + text)
            else:
                out.append(text)
        elif isinstance(block, Table):
            rows = _table_rows(block)
            if rows:
                lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
                lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
                out.append("\n".join(lines))
    return "\n\n".join(out)


def _table_rows(table) -> list[list[str]]:
    """The table's cells as text. A merged cell is listed once per grid position it covers; its text is kept
    at the first (one cell merged over a 500 by 500 grid would otherwise repeat its text 250,000 times)."""
    seen: set = set()  # the cells' XML elements, kept alive so that one element is always the same object
    rows = []
    for row in table.rows:
        cells = []
        for cell in row.cells:
            first = cell._tc not in seen
            seen.add(cell._tc)
            cells.append(cell.text.strip().replace("|", "\\|") if first else "")
        rows.append(cells)
    return rows


def _has_title(document) -> bool:
    return any((p.style is not None and p.style.name == "Title") for p in document.paragraphs[:5])
