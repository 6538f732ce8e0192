"""Sphinx extension: author-year labels on the references page (sphinxcontrib-bibtex + pybtex).

The chapters cite author-year (``bibtex_reference_style: author_year``: "Zhu et al. [2025]"), but
sphinxcontrib-bibtex still gives every bibliography entry a label, and pybtex's ``plain`` style
numbers them ("[1]"). This module registers a pybtex formatting style ``authoryear``: ``plain``
(sorted by author, year, title) whose labels are "Zhu et al., 2025", "Gregor and LeCun, 2010",
"Olshausen and Field, 1996", with "a", "b", ... appended to the year when two entries would get
the same label. Select it with ``bibtex_default_style: authoryear`` in ``_config.yml``; the
extension is loaded through ``sphinx.local_extensions``.
"""

from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _surname(person) -> str:
    """A person's surname as plain text ("Dupré la Tour", "Gemma Team"), LaTeX accents and braces resolved."""
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


def author_year_label(entry) -> str:
    """"Last, year" for one author, "Last and Last, year" for two, "Last et al., year" for more.

    Falls back to the editors, then to the entry key, when an entry has no author.
    """
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_surname(p) for p in persons]
    if not names:
        who = entry.key
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    """Author-year labels, unique within one bibliography (a, b, ... after a repeated year)."""

    def format_labels(self, sorted_entries):
        labels = [author_year_label(entry) for entry in sorted_entries]
        repeated = {label for label, n in Counter(labels).items() if n > 1}
        used: Counter = Counter()
        for label in labels:
            if label in repeated:
                used[label] += 1
                label = f"{label}{chr(ord('a') + used[label] - 1)}"
            yield label


class AuthorYearStyle(PlainStyle):
    """pybtex's ``plain`` entry formatting and sorting with :class:`AuthorYearLabelStyle` labels."""

    default_label_style = "authoryear"


def setup(app):
    register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
