"""Shortcodes: Hugo shortcodes and Jekyll tags rendered to the text a reader of the site sees."""

from __future__ import annotations

from pathlib import Path

from conftest import write_tree

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
