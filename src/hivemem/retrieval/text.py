"""Turning a recall query into keyword search terms.

Stop words are dropped before the full-text search: they carry almost no
BM25 weight but have the longest posting lists, so they cost time and add
noise. Stemming is the full-text index's job (FTS5 ``porter``, PostgreSQL
``english``), so terms are passed on as words.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.UNICODE)

STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
    off on once only or other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours yourself yourselves s t don didn doesn
    isn wasn weren aren hasn haven hadn won wouldn shouldn couldn ll re ve d m o y""".split()
)

#: More terms than this only slow the search down; the longest ones carry the most signal.
MAX_TERMS = 32


def keyword_terms(query: str) -> list[str]:
    """Distinct lowercase words of ``query`` without stop words, in order of appearance.

    A query made only of stop words keeps them, so it still finds something.
    """
    words: list[str] = []
    for match in _WORD.finditer(query.lower()):
        for word in re.split(r"['’]", match.group()):
            if word and word not in words:
                words.append(word)
    terms = [w for w in words if w not in STOP_WORDS] or words
    if len(terms) > MAX_TERMS:
        keep = set(sorted(terms, key=len, reverse=True)[:MAX_TERMS])
        terms = [t for t in terms if t in keep]
    return terms
