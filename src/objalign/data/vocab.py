"""Candidate vocabularies for open-vocabulary retrieval: a shipped list of object names or a user file.

``"lvis"`` is the 1,203 LVIS v1 category names (``vocab_lvis_v1.txt`` beside this module; its header says where the
list comes from). A path names a UTF-8 text file with one name per line (blank lines and lines starting with ``#``
are skipped). Names are shown with underscores as spaces (LVIS writes ``baby_buggy``); duplicates are dropped,
keeping the first.
"""

from __future__ import annotations

from pathlib import Path

from objalign.errors import ObjalignError

__all__ = ["SHIPPED", "load_vocabulary", "normalise_name"]

SHIPPED = {"lvis": "vocab_lvis_v1.txt"}


def normalise_name(name: str) -> str:
    """Display form of a vocabulary name: underscores as spaces, surrounding space stripped."""
    return " ".join(str(name).replace("_", " ").split())


def load_vocabulary(spec: str) -> list[str]:
    """Names of the vocabulary ``spec`` (``"lvis"`` or a path to a text file), normalised and de-duplicated."""
    if spec in SHIPPED:
        path = Path(__file__).with_name(SHIPPED[spec])
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ObjalignError(f"vocabulary {spec!r} is neither a shipped list ({', '.join(SHIPPED)}) nor a file: "
                                "pass 'lvis' or the path of a text file with one name per line")
    lines = path.read_text(encoding="utf-8").splitlines()
    names = [normalise_name(x) for x in lines if x.strip() and not x.lstrip().startswith("#")]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise ObjalignError(f"vocabulary file {path} holds no names: write one name per line")
    return names
