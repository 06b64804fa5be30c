"""Writes a JSONL corpus for running the Celery baseline alone: N documents of about B bytes of English-like text.

    python3 benches/baselines/celery/make_documents.py --documents 200 --bytes 8000 > /tmp/docs.jsonl

The text generator is a port of `quern_benches::sample_document_seeded` (benches/src/lib.rs), so document i here is
the one quern-bench makes with seed i. No dependencies beyond the standard library.
"""

import argparse
import json
import sys

WORDS = ["the", "river", "carried", "grain", "past", "a", "mill", "where", "lanterns", "burned", "through", "winter",
         "and", "every", "ledger", "recorded", "copper", "coins", "traded", "for", "harvest", "in", "valley",
         "orchards"]  # fmt: skip
MASK = (1 << 64) - 1


def sample_document_seeded(size: int, seed: int) -> str:
    parts, length = [], 0
    state = 0x9E3779B97F4A7C15 ^ ((seed * 0xFF51AFD7ED558CCD) & MASK)
    words_in_sentence = 0
    while length < size:
        state = (state * 6364136223846793005 + 1442695040888963407) & MASK
        word = WORDS[(state >> 33) % len(WORDS)]
        words_in_sentence += 1
        if words_in_sentence == 14:
            words_in_sentence = 0
            word += ". " + ("\n\n" if (state >> 20) % 5 == 0 else "")
        else:
            word += " "
        parts.append(word)
        length += len(word)
    return "".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--documents", type=int, default=200)
    p.add_argument("--bytes", type=int, default=8000)
    p.add_argument("--collection", default="bench")
    args = p.parse_args()
    for i in range(args.documents):
        doc = {"collection": args.collection, "document_id": f"doc-{i:06}", "text": sample_document_seeded(args.bytes, i)}
        sys.stdout.write(json.dumps(doc) + "\n")


if __name__ == "__main__":
    main()
