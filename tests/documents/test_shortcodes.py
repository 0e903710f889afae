"""Shortcodes: Hugo shortcodes and Jekyll tags rendered to the text a reader of the site sees."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import hang_guard, load_in_a_box, write_tree

from rag.documents.discovery import SourceFile
from rag.documents.errors import LoadError
from rag.documents.loading import TextLimits, load
from rag.documents.shortcodes import include_reader, render

MAX = 1024 * 1024


def test_admonitions_become_their_text_after_a_bold_label():
    page = (
        "Before.\n\n"
        '{{< call-out class="warning" >}}\nRestarting drops open sockets.\n{{< /call-out >}}\n\n'
        '{{<call-out "tip" title="Faster reloads:">}}Use a graceful reload.{{</call-out>}}\n\n'
        "{{< note >}}Keys rotate weekly.{{< /note >}}\n\n"
        "{{< important >}}Back up the vault first.{{< /important >}}\n"
    )
    assert render(page) == (
        "Before.\n\n"
        "**Warning:** Restarting drops open sockets.\n\n"
        "**Faster reloads:** Use a graceful reload.\n\n"
        "**Note:** Keys rotate weekly.\n\n"
        "**Important:** Back up the vault first.\n"
    )


def test_an_admonition_that_opens_with_a_list_keeps_the_list_on_its_own_lines():
    page = "{{< call-out class=\"note\" >}}\n- first step\n- second step\n{{< /call-out >}}"
    assert render(page) == "**Note:**\n\n- first step\n- second step"


def test_tabs_keep_their_text_under_their_name():
    page = (
        '{{< tabs name="setup" >}}\n'
        '{{% tab name="Package manager" %}}\nInstall the package.\n{{% /tab %}}\n'
        '{{%tab name="From source"%}}\n```\nmake install\n```\n{{%/tab%}}\n'
        "{{< /tabs >}}\n"
    )
    assert render(page) == (
        "\n**Package manager**\n\nInstall the package.\n**From source**\n\n```\nmake install\n```\n\n"
    )


def test_details_and_cards_keep_their_title_and_text():
    page = (
        '{{< details summary="Sample output" >}}\nstatus: ok\n{{< /details >}}\n'
        '{{<card title="Billing service" titleUrl="/billing/">}}\n  Charges cards nightly.\n{{</card >}}'
    )
    assert render(page) == "**Sample output**\n\nstatus: ok\n**Billing service**\n\n  Charges cards nightly."


def test_wrappers_keep_their_text_and_links_become_their_target():
    page = (
        "Open {{<nb>}}**Settings**{{</nb>}} and read [the guide]({{< ref \"/ops/guide.md\" >}}) "
        "or [the FAQ]({{< relref `../faq.md` >}}).\n{{< table >}}\n| a | b |\n{{< /table >}}"
    )
    assert render(page) == (
        "Open **Settings** and read [the guide](/ops/guide.md) or [the FAQ](../faq.md).\n\n| a | b |\n"
    )


def test_self_closing_calls_are_dropped_or_reduced_to_their_visible_text():
    page = (
        'Click {{% icon download %}} to save.{{< img src="/a.png" alt="Queue diagram" >}}'
        '{{<img src="/b.png" alt="">}} Version {{< product-version >}}. '
        '{{<link "/scripts/setup.sh" "Get the setup script">}} {{< ghcode "https://example.org/x.yaml" >}}end'
    )
    assert render(page) == "Click  to save.Queue diagram Version . Get the setup script end"


def test_stray_closing_tags_are_dropped_and_unclosed_calls_keep_what_follows():
    assert render("a {{< /note >}}b") == "a b"
    assert render("{{< icon-feature >}} New: retries. {{< note >}}Kept text.{{< /note >}}") == (
        " New: retries. **Note:** Kept text."
    )


def test_go_templates_and_plain_braces_are_left_alone():
    page = "```yaml\nimage: {{ .Values.image }}\n```\nSet {{ site.title }} and a map {{a: 1}}."
    assert render(page) == page


def test_hugo_includes_are_found_when_the_root_is_above_the_sites_content_folder(tmp_path: Path):
    root = write_tree(
        tmp_path / "repo",
        {
            "docs/includes/install/jwt.md": "Copy the JWT file to /etc/nginx/.\n",
            "docs/nginx/admin-guide/install.md": "",
        },
    )
    read = include_reader(root, root / "docs/nginx/admin-guide/install.md", MAX)
    assert render('1. {{< include "install/jwt.md" >}}', read) == "1. Copy the JWT file to /etc/nginx/."


def test_hugo_includes_are_resolved_under_the_root_and_cycles_are_cut(tmp_path: Path):
    root = write_tree(
        tmp_path / "site",
        {
            "includes/steps/login.md": "---\nfiles: [x]\n---\nSign in with your badge.\n",
            "includes/loop-a.md": 'Loop A text. {{< include "loop-b.md" >}}',
            "includes/loop-b.md": 'Loop B text. {{< include "loop-a.md" >}}',
            "guide/page.md": "",
        },
    )
    (tmp_path / "secret.md").write_text("Outside text.", encoding="utf-8")
    read = include_reader(root, root / "guide/page.md", MAX)
    page = (
        'Start.\n\n{{< include "steps/login.md" >}}\n\n{{< include "../../secret.md" >}}'
        '{{< include "missing.md" >}}\n{{< include "loop-a.md" >}}'
    )
    assert render(page, read) == "Start.\n\nSign in with your badge.\n\n\nLoop A text. Loop B text. "


def test_jekyll_tags_outside_code_are_rendered(tmp_path: Path):
    root = write_tree(tmp_path / "site", {"_includes/footer.md": "Owned by the platform team.\n", "docs/p.md": ""})
    page = (
        "{% include footer.md %}\n"
        "{% raw %}Literal {{ braces }} stay.{% endraw %}\n"
        "{% comment %}draft note{% endcomment %}"
        "{% if site.beta %}Beta only.{% endif %}\n"
        "{% highlight ruby %}\nputs 1\n{% endhighlight %}\n"
        "```jinja\n{% for host in hosts %}{{ host }}{% endfor %}\n```\n"
        "{% include nowhere.html %}{% include ../../../etc/passwd %}done\n"
    )
    assert render(page, include_reader(root, root / "docs/p.md", MAX)) == (
        "Owned by the platform team.\n"
        "Literal {{ braces }} stay.\n"
        "Beta only.\n"
        "```ruby\nputs 1\n```\n"
        "```jinja\n{% for host in hosts %}{{ host }}{% endfor %}\n```\n"
        "done\n"
    )


def test_heading_anchors_are_taken_off_headings_only():
    page = "## Rolling restarts {#rolling}\n\nText {#kept} here.\n### Limits {.wide #limits}\n```\n# shell {#x}\n```\n"
    assert render(page) == "## Rolling restarts\n\nText {#kept} here.\n### Limits\n```\n# shell {#x}\n```\n"


def test_code_fenced_inside_a_list_item_is_left_alone():
    page = "1. Run:\n\n     ```\n     # {% raw %} {#x}\n     ```\n\n## Next {#next}\n"
    assert render(page) == "1. Run:\n\n     ```\n     # {% raw %} {#x}\n     ```\n\n## Next\n"


def test_jekyll_includes_with_parameters(tmp_path: Path):
    root = write_tree(
        tmp_path / "site",
        {"_includes/owner.md": "Owned by {{ include.team }} ({{include.channel}}).", "_includes/note.html": "<b>x</b>"},
    )
    page = (
        '{% include note.html content="Tokens expire after an hour." %}\n'
        '{% include owner.md team="the platform team" channel=\'#platform\' %}\n'
    )
    assert render(page, include_reader(root, root / "p.md", MAX)) == (
        "**Note:** Tokens expire after an hour.\nOwned by the platform team (#platform).\n"
    )


# -- linear time on hostile runs (issue 24, fault 5) -------------------------------------------------

RUN = 100_000  # characters of each hostile page
HOSTILE_PAGES = {
    "spaces after an opener": "{{< a" + " " * RUN,
    "tabs and newlines after an opener": "{{% a" + " \t\n" * (RUN // 3),
    "spaces after a closing opener": "{{< /a" + " " * RUN,
    "openers that never close": "{{< a " * (RUN // 6),
    "percent openers that never close": "{{% a " * (RUN // 6),
    "bare openers": "{{<" * (RUN // 3),
    "slashes before a closer that never comes": "{{< a" + " /" * (RUN // 2),
    "an unterminated quoted argument": '{{< a x="' + "b " * (RUN // 2),
    "arguments without values": "{{< a " + "b= " * (RUN // 3) + ">}}",
    "liquid openers that never close": "{% a " * (RUN // 5),
    "spaces after a liquid opener": "{% a" + " " * RUN,
    "dashes before a liquid closer that never comes": "{% a" + " -" * (RUN // 2),
    "unclosed raw blocks": "{% raw %}x" * (RUN // 10),
    "heading anchors that never close": "# x" + " {#" * (RUN // 3),
    "spaces in a heading before an anchor": "# x" + " " * RUN + "{#a",
    "unclosed paired calls": "{{< note >}}x " * (RUN // 14),
    "include parameters": "{% include note.html " + "a=1 " * (RUN // 4) + "%}",
}


@pytest.mark.parametrize("name", HOSTILE_PAGES)
def test_rendering_takes_linear_time_on_hostile_runs(name):
    page = HOSTILE_PAGES[name]
    with hang_guard(10, f"rendering {name}"):
        text = render(page, lambda kind, argument: None)
    assert len(text) <= len(page)


def test_the_shortcode_patterns_still_read_their_calls_after_long_runs():
    page = "{{< note" + " " * 5000 + ">}}Keys rotate weekly.{{< /note >}}\n" + "{% raw %}" + " " * 5000 + "{% endraw %}"
    assert render(page).startswith("**Note:** Keys rotate weekly.")


# -- include fan-out (issue 24, fault 6) --------------------------------------------------------------


def fan_out_site(root: Path, depth: int, fan: int = 10) -> Path:
    """``includes/lN.md`` includes the next level ``fan`` times; the page includes level 1 ``fan`` times."""
    call = '{{{{< include "l{}.md" >}}}} '
    files = {f"includes/l{n}.md": f"Level {n} text. " + call.format(n + 1) * fan for n in range(1, depth)}
    files[f"includes/l{depth}.md"] = f"Level {depth} text, the last one.\n"
    files["guide/page.md"] = "# Fan-out\n\nStart.\n\n" + '{{< include "l1.md" >}}\n' * fan
    return write_tree(root, files) / "guide" / "page.md"


@pytest.mark.parametrize("depth", [3, 5, 7])
def test_include_fan_out_is_refused_before_it_is_built(tmp_path, depth):
    page = fan_out_site(tmp_path / "site", depth)
    result = load_in_a_box(page, tmp_path / "site", memory_mb=600, timeout=60)
    assert "error" in result, result
    assert "includes" in result["error"] and "RAG_MAX_EXPANSION" in result["error"], result


def test_a_page_that_includes_a_large_snippet_and_small_ones_often_still_loads(tmp_path):
    snippet = "A metric the exporter publishes, with its unit and labels.\n" * 400  # 24 KB, as a metrics catalog
    root = write_tree(
        tmp_path / "site",
        {
            "includes/catalog.md": snippet,
            "includes/note.md": "Restart the agent after changing its configuration.\n",
            "guide/page.md": "# Metrics\n\n" + '{{< include "catalog.md" >}}\n' + '{{< include "note.md" >}}\n' * 8,
        },
    )
    document = load(SourceFile(root / "guide/page.md", "site", "guide/page.md", str(root)), MAX)
    assert document.text.count("Restart the agent") == 8 and len(document.text) > len(snippet)


def test_includes_count_against_the_page_size_cap(tmp_path):
    root = write_tree(
        tmp_path / "site",
        {"includes/big.md": "word " * 40_000, "guide/page.md": "# Big\n\n" + '{{< include "big.md" >}}\n' * 3},
    )
    limits = TextLimits(max_chars=300_000, max_expansion=10)
    with pytest.raises(LoadError, match=r"includes .* over the 0\.3 MB limit \(RAG_MAX_TEXT_MB\)"):
        load(SourceFile(root / "guide/page.md", "site", "guide/page.md", str(root)), MAX, limits=limits)
