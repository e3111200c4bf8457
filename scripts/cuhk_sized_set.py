#!/usr/bin/env python3
"""Writes a CUHK-PEDES-sized set from a generated TOY-PEDES folder, for timing `ccma check`.

    python3 scripts/cuhk_sized_set.py TOY_DIR ROOT

TOY_DIR is a TOY-PEDES folder with at least 40,206 images (e.g. made by
`ccma stats --dataset TOY-PEDES --root-dir ROOT --set synth_ids=[12000,1000,1400]`). ROOT gets
`CUHK-PEDES/reid_raw.json` in CUHK-PEDES's layout with the published split (11,003 / 1,000 / 1,000
identities over 34,054 / 3,078 / 3,074 images) and `CUHK-PEDES/imgs` as a link to TOY_DIR/imgs.
"""
import json
import os
import sys

SPLITS = [("train", 1, 11003, 34054), ("val", 11004, 1000, 3078), ("test", 12004, 1000, 3074)]


def main():
    toy, root = sys.argv[1], sys.argv[2]
    with open(os.path.join(toy, "reid_raw.json"), encoding="utf-8") as f:
        entries = json.load(f)
    need = sum(n for *_, n in SPLITS)
    if len(entries) < need:
        sys.exit(f"{toy} has {len(entries)} images; {need} are needed")
    out, k = [], 0
    for split, first_id, ids, images in SPLITS:
        for j in range(images):
            e = entries[k]
            k += 1
            out.append({"split": split, "id": first_id + j * ids // images,
                        "file_path": e["file_path"], "captions": e["captions"]})
    dest = os.path.join(root, "CUHK-PEDES")
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(dest, "reid_raw.json"), "w", encoding="utf-8") as f:
        json.dump(out, f)
    link = os.path.join(dest, "imgs")
    if not os.path.lexists(link):
        os.symlink(os.path.abspath(os.path.join(toy, "imgs")), link)
    print(f"{len(out)} images in {dest}")


if __name__ == "__main__":
    main()
