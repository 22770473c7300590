"""Column and field names in a particle file that recon does not know: one warning line per file read.

Shared by the STAR and cryoSPARC readers. A name within ``MAX_EDITS`` edits (case-insensitive) of a name recon
reads and the file lacks is most likely that name misspelled, and the warning says so ("did you mean ...?").
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence

MAX_EDITS = 2


def edit_distance(a: str, b: str) -> int:
    """Damerau-Levenshtein distance (optimal string alignment): the fewest insertions, deletions, substitutions
    and transpositions of two adjacent characters that turn ``a`` into ``b``, no substring edited twice."""
    before, previous = None, list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            d = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y))
            if i > 1 and j > 1 and x == b[j - 2] and a[i - 2] == y:
                d = min(d, before[j - 2] + 1)
            current.append(d)
        before, previous = previous, current
    return previous[-1]


def nearest(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate closest to ``name`` ignoring case (the first listed on ties) if within ``MAX_EDITS``."""
    scored = [(edit_distance(name.lower(), c.lower()), i) for i, c in enumerate(candidates)]
    distance, i = min(scored, default=(MAX_EDITS + 1, -1))
    return candidates[i] if distance <= MAX_EDITS else None


def unknown_names(names: Iterable[str], read: Container[str], ignored: Container[str]) -> list[str]:
    """The ``names`` neither read nor knowingly ignored, each once, in file order."""
    return list(dict.fromkeys(n for n in names if n not in read and n not in ignored))


def unknown_names_warning(path, kind: str, names: Iterable[str], read: Sequence[str], ignored: Container[str]
                          ) -> str | None:
    """The one ``warning:`` line naming the file's unknown names (``kind``: "columns" or "fields"), a near miss
    of a name recon reads and the file lacks with "did you mean"; None when every name is known."""
    names = list(names)
    absent = [r for r in read if r not in names]
    listed = []
    for name in unknown_names(names, read, ignored):
        guess = nearest(name, absent)
        listed.append(f"{name} (did you mean {guess}?)" if guess else name)
    if not listed:
        return None
    return f"warning: {path}: {kind} recon does not read, ignored: {', '.join(listed)}"
