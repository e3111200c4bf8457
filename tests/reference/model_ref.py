"""Independent reference of the CCMA network, built from torch.nn parts following METHOD.md
section 2 (CLIP encoders, IRRA's cross-modal MLM branch, differential cross-modal attention).

usage: model_ref.py OUT_DIR
Writes, in OUT_DIR:
  clip.pt             tiny random CLIP weights as a TorchScript archive with OpenAI's names,
                      pre-trained on a square 64x64 grid (4x4 patches), with the size entries
                      (input_resolution, context_length, vocab_size) as buffers, as OpenAI's has
  clip_params.pt      the same with those entries as parameters
  irra_best.pth       the whole model (grid 4x2) as IRRA's and CCMA's Checkpointer saves it:
                      torch.save of {model, optimizer, scheduler, num_epoch, iteration}, linear and
                      attention weights in fp16 as IRRA's convert_weights leaves them, CCMA's
                      published extra modules included, no DCA stacks
  model.safetensors   every parameter of the whole model (names as ccma's), grid already 4x2
  io.safetensors      inputs (images 64x32, ids, mlm_ids, mlm_labels) and expected outputs
                      (f_i, f_t, mlm_logits, g_i, g_t, and clip_f_i / clip_f_t for clip.pt)
  config.json         the sizes
  configs.yaml        the attention heads, as a run's configs.yaml beside its best.pth records them
Every parameter is rounded to fp16 precision, so the fp16 copies are exact.
"""
import copy
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from clip_blocks import Stack, quick_gelu

torch.manual_seed(0)
OUT = sys.argv[1]
E, VW, VL, P, TW, TL, VOCAB, CTX = 32, 64, 2, 16, 64, 2, 1000, 24
H, W = 64, 32
CMT, DCA_HEADS, LAMBDA_INIT = 1, 4, 0.8


class Visual(nn.Module):
    def __init__(self, grid):
        super().__init__()
        self.conv1 = nn.Conv2d(3, VW, P, P, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(VW) * 0.1)
        self.positional_embedding = nn.Parameter(torch.randn(grid + 1, VW) * 0.1)
        self.ln_pre, self.ln_post = nn.LayerNorm(VW), nn.LayerNorm(VW)
        self.transformer = Stack(VW, VL, VW // 64)
        self.proj = nn.Parameter(torch.randn(VW, E) * 0.1)

    def forward(self, x, pos=None):
        x = self.conv1(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], 1)
        x = x + (self.positional_embedding if pos is None else pos)
        return self.ln_post(self.transformer(self.ln_pre(x))) @ self.proj


class Clip(nn.Module):
    """OpenAI's layout: `visual.*`, `token_embedding`, `positional_embedding`, `transformer.*`,
    `ln_final`, `text_projection`."""

    def __init__(self):
        super().__init__()
        self.visual = Visual(16)
        self.token_embedding = nn.Embedding(VOCAB, TW)
        self.positional_embedding = nn.Parameter(torch.randn(CTX, TW) * 0.1)
        self.transformer = Stack(TW, TL, TW // 64)
        self.ln_final = nn.LayerNorm(TW)
        self.text_projection = nn.Parameter(torch.randn(TW, E) * 0.1)

    def encode_text(self, ids):
        causal = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)
        x = self.token_embedding(ids) + self.positional_embedding
        return self.ln_final(self.transformer(x, causal)) @ self.text_projection

    def forward(self, image):
        return self.visual(image)


def resize_grid(pos, gh, gw):
    cls, grid = pos[:1], pos[1:]
    old = int(math.isqrt(grid.shape[0]))
    grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(gh * gw, -1)], 0)


class Dca(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        hd = d // heads
        self.ln_q, self.ln_kv, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        for n in ["lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"]:
            setattr(self, n, nn.Parameter(torch.randn(hd) * 0.1))
        self.subln = nn.Parameter(1 + 0.1 * torch.randn(2 * hd))
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x, y, key_pad=None):
        b, nq, d = x.shape
        nk, h, hd = y.shape[1], self.heads, d // self.heads
        xn, yn = self.ln_q(x), self.ln_kv(y)
        q = self.q_proj(xn).view(b, nq, h, hd).transpose(1, 2)
        k = self.k_proj(yn).view(b, nk, h, hd).transpose(1, 2)
        v = self.v_proj(yn).view(b, nk, h // 2, 2 * hd).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / math.sqrt(hd)
        if key_pad is not None:
            logits = logits.masked_fill(key_pad[:, None, None, :], float("-inf"))
        a = logits.softmax(-1).view(b, h // 2, 2, nq, nk)
        lam = torch.exp((self.lambda_q1 * self.lambda_k1).sum()) - torch.exp((self.lambda_q2 * self.lambda_k2).sum()) + LAMBDA_INIT
        o = (a[:, :, 0] - lam * a[:, :, 1]) @ v
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * self.subln * (1 - LAMBDA_INIT)
        x = x + self.out_proj(o.transpose(1, 2).reshape(b, nq, d))
        return x + self.mlp.c_proj(quick_gelu(self.mlp.c_fc(self.ln_2(x))))


clip = Clip().eval()
# Full model: the CLIP part with the grid resized to 4x2, plus IRRA's and CCMA's modules.
cross_attn = nn.MultiheadAttention(E, max(E // 64, 1), batch_first=True)
cmt = Stack(E, CMT, max(E // 64, 1))
ln_pre_t, ln_pre_i, ln_post = nn.LayerNorm(E), nn.LayerNorm(E), nn.LayerNorm(E)
mlm_head = nn.Module()
mlm_head.dense, mlm_head.ln, mlm_head.fc = nn.Linear(E, E), nn.LayerNorm(E), nn.Linear(E, VOCAB)
classifier = nn.Linear(E, 7)
dca_image, dca_text = Dca(E, DCA_HEADS), Dca(E, DCA_HEADS)
for m in [ln_pre_t, ln_pre_i, ln_post, mlm_head.ln, dca_image.ln_q, dca_text.ln_kv]:  # non-trivial norms
    nn.init.normal_(m.weight, 1.0, 0.1)
    nn.init.normal_(m.bias, 0.0, 0.1)

MODULES = [("cross_attn", cross_attn), ("cross_modal_transformer", cmt), ("ln_pre_t", ln_pre_t), ("ln_pre_i", ln_pre_i),
           ("ln_post", ln_post), ("mlm_head", mlm_head), ("classifier", classifier), ("dca_image.0", dca_image), ("dca_text.0", dca_text)]
with torch.no_grad():
    for m in [clip] + [m for _, m in MODULES]:
        for prm in m.parameters():
            prm.copy_(prm.half().float())
    pos42 = resize_grid(clip.visual.positional_embedding, 4, 2)
    images = torch.randn(3, 3, H, W)
    lens = [7, 12, 24]
    ids = torch.zeros(3, CTX, dtype=torch.long)
    for i, n in enumerate(lens):
        ids[i, :n] = torch.randint(1, VOCAB - 2, (n,))
        ids[i, n - 1] = VOCAB - 1  # EOT: the largest id
    mlm_labels = torch.zeros_like(ids)
    mlm_ids = ids.clone()
    for i, pos in enumerate([[1, 3], [2, 5, 9], [4]]):
        for p in pos:
            mlm_labels[i, p] = ids[i, p]
            mlm_ids[i, p] = VOCAB - 2  # the mask id of this tiny vocabulary
    eot = ids.argmax(-1)
    img_tokens = clip.visual(images, pos42)
    txt_tokens = clip.encode_text(ids)
    f_i, f_t = img_tokens[:, 0], txt_tokens[torch.arange(3), eot]
    mlm_tokens = clip.encode_text(mlm_ids)
    kv = ln_pre_i(img_tokens)
    x = cross_attn(ln_pre_t(mlm_tokens), kv, kv, need_weights=False)[0]
    x = ln_post(cmt(x))
    sel = mlm_labels.reshape(-1) != 0
    mlm_logits = mlm_head.fc(mlm_head.ln(quick_gelu(mlm_head.dense(x.reshape(-1, E)[sel]))))
    pad = torch.arange(CTX)[None, :] > eot[:, None]
    g_i = dca_image(img_tokens, txt_tokens, pad)[:, 0]
    g_t = dca_text(txt_tokens, img_tokens)[torch.arange(3), eot]
    # Features of the archive alone at the same input size.
    clip_f_i = clip.visual(images, pos42)[:, 0]

os.makedirs(OUT, exist_ok=True)
state = {f"base_model.{k}": v for k, v in clip.state_dict().items()}
state["base_model.visual.positional_embedding"] = pos42
for prefix, mod in MODULES:
    for k, v in mod.state_dict().items():
        state[f"{prefix}.{k}"] = v
save_file({k: v.detach().contiguous() for k, v in state.items()}, os.path.join(OUT, "model.safetensors"))

# OpenAI's archive keeps its sizes beside the weights: as buffers, or as parameters in some exports.
sized = copy.deepcopy(clip)
for name, value in [("input_resolution", 64), ("context_length", CTX), ("vocab_size", VOCAB)]:
    sized.register_buffer(name, torch.tensor(value))
example = images[:1].new_zeros(1, 3, 64, 64)
torch.jit.trace(sized, example).save(os.path.join(OUT, "clip.pt"))
for name in ["input_resolution", "context_length", "vocab_size"]:
    value = float(getattr(sized, name))
    del sized._buffers[name]
    setattr(sized, name, nn.Parameter(torch.tensor(value)))
torch.jit.trace(sized, example).save(os.path.join(OUT, "clip_params.pt"))

# IRRA's checkpoint: IRRA's names (ccma's, less the DCA stacks), convert_weights' dtypes, CCMA's
# published extras, and the training state beside the model.
half = ("in_proj_weight", "in_proj_bias", "text_projection", "visual.proj", "conv1.weight", "out_proj.", "c_fc.", "c_proj.",
        "mlm_head.dense.", "mlm_head.fc.", "classifier.")
irra = {k: (v.half() if any(h in k for h in half) else v) for k, v in state.items() if not k.startswith("dca_")}
irra["cross_modal_att.gamma"] = torch.zeros(1)
irra["cross_modal_att_text.gamma"] = torch.zeros(1)
irra["DiffAttention.q_proj.weight"] = torch.randn(12, 12).half()
irra["DiffAttention.lambda_q1"] = torch.randn(1)
torch.save({"model": irra, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0, 1]}]},
            "scheduler": {"last_epoch": 1, "base_lrs": [1e-5, 1e-5]}, "num_epoch": 1, "iteration": 0, "epoch": 1},
           os.path.join(OUT, "irra_best.pth"))
io = {"images": images, "ids": ids, "mlm_ids": mlm_ids, "mlm_labels": mlm_labels, "f_i": f_i, "f_t": f_t,
      "mlm_logits": mlm_logits, "g_i": g_i, "g_t": g_t, "clip_f_i": clip_f_i, "clip_f_t": f_t.clone()}
save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(OUT, "io.safetensors"))
json.dump({"embed_dim": E, "vision_width": VW, "vision_layers": VL, "vision_heads": 1, "vision_patch_size": P,
           "transformer_width": TW, "transformer_layers": TL, "transformer_heads": 1, "vocab_size": VOCAB,
           "text_length": CTX, "img_size": [H, W], "cmt_depth": CMT, "dca_heads": DCA_HEADS, "num_classes": 7},
          open(os.path.join(OUT, "config.json"), "w"))
with open(os.path.join(OUT, "configs.yaml"), "w") as f:
    f.write("vision_heads: 1\ntransformer_heads: 1\n")
