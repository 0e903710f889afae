"""Front matter: the YAML block between ``---`` lines at the top of a page, read with a bound on its size.

YAML anchors and aliases let a few hundred bytes stand for hundreds of millions of values (``a: &a [...]``,
``b: [*a, *a, ...]``, nine levels deep). Parsing shares the repeated values, but anything that walks the
result (a message quoting it, ``str()``, JSON) expands them: 387 bytes once took 72 s and 5.5 GB. The block is
therefore composed first and its values counted as they would be expanded, stopping at ``MAX_VALUES`` (so the
count costs at most that many steps); a block past it is refused before any value is built.
"""

from __future__ import annotations

from typing import Any

MAX_VALUES = 10_000  # a page's front matter holds tens of values; ten thousand is no page's


class FrontMatterError(ValueError):
    """Front matter that cannot be read; the message is short and says why."""


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """``(metadata, body)`` of a page; ``({}, text)`` when it has no front matter block."""
    if not text.startswith("---"):
        return {}, text
    import frontmatter
    import yaml

    handler = frontmatter.YAMLHandler()
    handler.load = _load_bounded  # type: ignore[method-assign]
    try:
        post = frontmatter.loads(text, handler=handler)
    except yaml.YAMLError as error:
        raise FrontMatterError(f"invalid YAML front matter: {clip(str(error).splitlines()[0])}") from None
    except RecursionError:
        raise FrontMatterError("invalid YAML front matter: nested too deeply") from None
    return dict(post.metadata), post.content


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters, for messages (a value can be as long as the file)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_bounded(fm: str, **_: object) -> Any:
    import yaml

    loader = yaml.SafeLoader(fm)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_size(root) -> None:
    """Counts the values under ``root`` as expanded (an alias counts again each time it is used), up to MAX_VALUES."""
    import yaml

    count = 0
    stack = [root]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise FrontMatterError(f"front matter holds over {MAX_VALUES:,} values once its YAML aliases are expanded")
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
