#!/usr/bin/env python3
"""Independent reference for ccma's caption tokenizer, written from METHOD.md section 1.

CLIP's byte-level BPE procedure with IRRA's vocabulary: the text is cleaned with the real
`ftfy.fix_text`, `html.unescape` twice, strip, whitespace collapse (the `regex` package) and
`lower()`; split with CLIP's pre-tokenisation pattern (case-insensitive, `regex` package); each
piece's UTF-8 bytes become printable symbols and are merged by rank. Vocabulary: 256 byte
symbols, the same with `</w>`, the first 48,894 merges of the file minus the last one (which is
not applied), then <|mask|>, <|startoftext|>, <|endoftext|>.

Usage: tokenizer_ref.py MERGES_FILE IN.json OUT.json
  IN.json  {"text_length": 77, "texts": ["...", ...]}
  OUT.json [[id, ...], ...]   (text_length ids per text)
"""
import html
import json
import sys

import ftfy
import regex

MERGES_USED = 49152 - 256 - 2  # merges IRRA reads from the file
PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)


def byte_symbols():
    """byte -> one printable character; printable Latin-1 bytes first (their own character),
    the remaining bytes in increasing order as U+0100, U+0101, ..."""
    first = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    rest = [b for b in range(256) if b not in first]
    symbol = {b: chr(b) for b in first}
    symbol.update({b: chr(0x100 + n) for n, b in enumerate(rest)})
    return first + rest, symbol


class Reference:
    def __init__(self, merges_path):
        with open(merges_path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : 1 + MERGES_USED]]
        assert len(merges) == MERGES_USED and all(len(m) == 2 for m in merges)
        merges = merges[:-1]  # IRRA drops the last merge from its vocabulary; it is not applied
        order, self.symbol = byte_symbols()
        vocab = [self.symbol[b] for b in order]
        vocab += [s + "</w>" for s in vocab]
        vocab += [a + b for a, b in merges]
        vocab += ["<|mask|>", "<|startoftext|>", "<|endoftext|>"]
        assert len(vocab) == 49408
        self.ids = {s: i for i, s in enumerate(vocab)}
        assert len(self.ids) == 49408, "vocabulary strings are distinct"
        self.rank = {m: r for r, m in enumerate(merges)}

    @staticmethod
    def clean(text):
        text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text)).strip()
        text = regex.sub(r"\s+", " ", text).strip()
        return text.lower()

    def bpe(self, piece):
        word = [self.symbol[b] for b in piece.encode("utf-8")]
        word[-1] += "</w>"
        while len(word) > 1:
            ranked = [(self.rank[p], p) for p in zip(word, word[1:]) if p in self.rank]
            if not ranked:
                break
            _, (a, b) = min(ranked)
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return [self.ids[s] for s in word]

    def encode(self, text, text_length):
        ids = [self.ids["<|startoftext|>"]]
        for piece in PATTERN.findall(self.clean(text)):
            if piece in ("<|startoftext|>", "<|endoftext|>"):
                ids.append(self.ids[piece])
            else:
                ids.extend(self.bpe(piece))
        ids.append(self.ids["<|endoftext|>"])
        if len(ids) > text_length:
            ids = ids[:text_length]
            ids[-1] = self.ids["<|endoftext|>"]
        return ids + [0] * (text_length - len(ids))


def main():
    merges_path, in_path, out_path = sys.argv[1:4]
    with open(in_path, encoding="utf-8") as f:
        job = json.load(f)
    ref = Reference(merges_path)
    out = [ref.encode(t, job["text_length"]) for t in job["texts"]]
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
