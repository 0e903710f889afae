"""*Copy* under an answer: one click puts the answer, as Markdown with its sources, on the clipboard.

Streamlit has no clipboard call, so this is a small ``st.components.v2`` component: a button drawn in the page
(no iframe) whose click handler writes the text it was given. ``navigator.clipboard`` exists only on a secure
page (https, or localhost); a team server on plain http gets the older selected-textarea copy instead.
"""

from __future__ import annotations

import streamlit as st

HTML = """<button type="button" class="copy"><span class="icon" aria-hidden="true">content_copy</span>
<span class="label">Copy</span></button>"""

# drawn like Streamlit's own secondary buttons, from the theme the page hands its components
CSS = """
.copy {
  display: inline-flex; align-items: center; gap: 0.5rem; min-height: 2.5rem; padding: 0.25rem 0.75rem;
  font-family: var(--st-font); font-size: var(--st-base-font-size); line-height: 1.6; cursor: pointer;
  color: var(--st-text-color); background: var(--st-background-color);
  border: 1px solid var(--st-border-color); border-radius: var(--st-button-radius);
}
.copy:hover, .copy:focus-visible { color: var(--st-primary-color); border-color: var(--st-primary-color); }
.icon { font-family: "Material Symbols Rounded"; font-size: 1.125rem; line-height: 1; }
"""

JS = """
export default function ({ parentElement, data }) {
  const button = parentElement.querySelector("button.copy");
  const label = button.querySelector(".label");
  button.onclick = async () => {
    const copied = await copyText(data.text);
    label.textContent = copied ? "Copied" : "Copy failed: select the text by hand";
    clearTimeout(button.resetLabel);
    button.resetLabel = setTimeout(() => { label.textContent = "Copy"; }, 2500);
  };
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (error) {
      // refused (permissions): try the older way below
    }
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  try {
    return document.execCommand("copy");
  } catch (error) {
    return false;
  } finally {
    area.remove();
  }
}
"""

_copy_button = st.components.v2.component("rag_copy_button", html=HTML, css=CSS, js=JS)


def copy_button(text: str, key: str) -> None:
    """A *Copy* button that puts ``text`` on the clipboard in the browser (no rerun)."""
    _copy_button(key=key, data={"text": text}, width="content")
