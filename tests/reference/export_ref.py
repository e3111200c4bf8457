"""Loads a file written by `ccma export --format irra` into an IRRA-shaped PyTorch model built from
METHOD.md (the modules of model_ref.py, under IRRA's attribute names) with a strict
`load_state_dict`, and computes the features from it.

usage: export_ref.py EXPORTED.safetensors
Prints JSON: the largest absolute differences of f_i, f_t and the MLM logits from the values
model_ref.py computed with the original weights.
"""
import json
import os
import runpy
import sys
import tempfile

import torch
import torch.nn as nn
from safetensors.torch import load_file

exported = sys.argv[1]
sys.argv = ["model_ref.py", tempfile.mkdtemp()]
g = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_ref.py"), run_name="__main__")
expected = g["io"]

irra = nn.Module()
irra.base_model = g["clip"]
irra.cross_attn, irra.cross_modal_transformer = g["cross_attn"], g["cmt"]
irra.ln_pre_t, irra.ln_pre_i, irra.ln_post = g["ln_pre_t"], g["ln_pre_i"], g["ln_post"]
irra.mlm_head, irra.classifier = g["mlm_head"], g["classifier"]
# IRRA keeps the positional grid resized to its input size (4x2 here).
irra.base_model.visual.positional_embedding = nn.Parameter(torch.zeros(4 * 2 + 1, g["VW"]))
with torch.no_grad():
    for p in irra.parameters():
        p.zero_()
irra.load_state_dict(load_file(exported), strict=True)

with torch.no_grad():
    images, ids, mlm_ids, mlm_labels = expected["images"], expected["ids"], expected["mlm_ids"], expected["mlm_labels"]
    img = irra.base_model.visual(images)
    f_i = img[:, 0]
    f_t = irra.base_model.encode_text(ids)[torch.arange(ids.shape[0]), ids.argmax(-1)]
    kv = irra.ln_pre_i(img)
    x = irra.cross_attn(irra.ln_pre_t(irra.base_model.encode_text(mlm_ids)), kv, kv, need_weights=False)[0]
    x = irra.ln_post(irra.cross_modal_transformer(x))
    sel = mlm_labels.reshape(-1) != 0
    h = irra.mlm_head
    logits = h.fc(h.ln(g["quick_gelu"](h.dense(x.reshape(-1, x.shape[-1])[sel]))))

print(json.dumps({name: (ours - expected[name]).abs().max().item()
                  for name, ours in [("f_i", f_i), ("f_t", f_t), ("mlm_logits", logits)]}))
