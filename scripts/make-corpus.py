#!/usr/bin/env python3
"""Rebuild corpus/ -- Quern's sample corpus of public-domain English text.

Not part of the build or the tests: corpus/ is committed; this script records
exactly where it came from, and regenerates it byte for byte.

Sources (see corpus/README.md for the licences):
  * Jane Austen's novels, from Debian's package r-cran-janeaustenr (R data,
    read with the PyPI package `rdata`; R itself is not needed);
  * the King James Bible, from Debian's package bible-kjv-text, read with
    the `bible` program of Debian's package bible-kjv.

Needs: Debian/Ubuntu with apt-get, root (to install bible-kjv), and a Python
with `rdata` importable, e.g.:
    apt-get install -y bible-kjv
    python3 -m venv /tmp/corpus-venv && /tmp/corpus-venv/bin/pip install rdata
    /tmp/corpus-venv/bin/python scripts/make-corpus.py
"""

import gzip
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"

# (directory, R variable, title line, chapters to keep)
AUSTEN = [
    ("austen-pride-and-prejudice", "prideprejudice", "Pride and Prejudice, by Jane Austen (1813)", range(1, 21)),
    ("austen-persuasion", "persuasion", "Persuasion, by Jane Austen (1817)", range(1, 9)),
    ("austen-northanger-abbey", "northangerabbey", "Northanger Abbey, by Jane Austen (1817)", range(1, 9)),
]

# (directory, `bible` book spec, title line, chapter word, chapters to keep)
KJV = [
    ("kjv-genesis", "gen", "The First Book of Moses, called Genesis. King James Version (1611)", "Chapter", range(1, 12)),
    ("kjv-ruth", "ruth", "The Book of Ruth. King James Version (1611)", "Chapter", range(1, 5)),
    ("kjv-psalms", "ps", "The Book of Psalms. King James Version (1611)", "Psalm", range(1, 24)),
    ("kjv-ecclesiastes", "ecc", "Ecclesiastes; or, the Preacher. King James Version (1611)", "Chapter", range(1, 13)),
    ("kjv-jonah", "jonah", "The Book of Jonah. King James Version (1611)", "Chapter", range(1, 5)),
]


def tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    text = "\n".join(lines).strip("\n")
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text + "\n"


def austen_texts(workdir: Path) -> dict:
    import rdata  # noqa: PLC0415 -- only this part needs it

    warnings.simplefilter("ignore")
    subprocess.run(["apt-get", "download", "r-cran-janeaustenr"], cwd=workdir, check=True)
    deb = next(workdir.glob("r-cran-janeaustenr_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "x")], check=True)
    data = workdir / "x/usr/lib/R/site-library/janeaustenr/data"
    # An R lazy-load database: Rdata.rdx (gzip'd serialized index) gives each
    # variable's (offset, length) in Rdata.rdb, where each object is a 4-byte
    # big-endian length followed by a zlib stream of the serialized object.
    index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress((data / "Rdata.rdx").read_bytes())))
    assert not index["references"], "unexpected references in the R lazy-load DB"
    rdb = (data / "Rdata.rdb").read_bytes()
    texts = {}
    for name, (offset, length) in index["variables"].items():
        chunk = rdb[offset : offset + length]
        (size,) = struct.unpack(">I", chunk[:4])
        body = zlib.decompress(chunk[4:])
        assert len(body) == size
        lines = rdata.conversion.convert(rdata.parser.parse_data(body))
        texts[str(name)] = "\n".join("" if line is None else str(line) for line in lines)
    return texts


def write(directory: str, number: int, header: str, body: str) -> None:
    path = CORPUS / directory / f"chapter-{number:02d}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tidy(header + "\n\n" + body.strip("\n")), encoding="utf-8")


def main() -> int:
    if shutil.which("bible") is None:
        sys.exit("the `bible` program is missing: apt-get install -y bible-kjv")
    for sub in CORPUS.iterdir() if CORPUS.exists() else []:
        if sub.is_dir():
            shutil.rmtree(sub)

    with tempfile.TemporaryDirectory() as tmp:
        texts = austen_texts(Path(tmp))
    for directory, var, title, keep in AUSTEN:
        # Chapters start at lines "Chapter 7" / "CHAPTER 7" / "CHAPTER VII";
        # what comes before the first is the title page, dropped here.
        parts = re.split(r"(?m)^(?:Chapter|CHAPTER) [0-9IVXLC]+\s*$", texts[var])[1:]
        for number in keep:
            write(directory, number, f"{title}\nChapter {number}", parts[number - 1])

    for directory, book, title, word, keep in KJV:
        for number in keep:
            out = subprocess.run(
                ["bible", "-l0", f"{book}{number}:1-999"],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True,
            ).stdout
            # Drop the program's own "Book N" heading; un-indent the verses.
            verses = [line.strip() for line in out.splitlines() if re.match(r"^\s+\d+ ", line)]
            assert verses, f"no verses for {book}{number}"
            write(directory, number, f"{title}\n{word} {number}", "\n".join(verses))

    files = sorted(CORPUS.glob("*/*.txt"))
    total = sum(f.stat().st_size for f in files)
    print(f"{len(files)} files, {total / 1024:.0f} KiB in {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
