"""MkDocs hook: render the reST roles left in docstrings (:class:`~a.B`, :func:`f`, ...) as plain inline code.

The docstrings are Markdown with some Sphinx roles; mkdocstrings renders a role as ``:class:`` followed by the code
span. This hook drops the role and the leading ``~`` (Sphinx's "show the last component only").
"""

import re

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|obj|exc|const|ref|doc):(<code>)(~)?([^<]*)(</code>)")


def _replace(match: re.Match) -> str:
    target = match.group(3)
    if match.group(2):  # ~a.b.C -> C
        target = target.rsplit(".", 1)[-1]
    return f"{match.group(1)}{target}{match.group(4)}"


def on_page_content(html, page, config, files):
    return _ROLE.sub(_replace, html)
