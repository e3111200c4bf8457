"""Independent PyTorch reference of RDE's pieces, written from METHOD.md section 7.

usage: rde_ref.py tal INPUTS.safetensors OUTPUTS.safetensors TAU MARGIN
    INPUTS: image [B, D], text [B, D], pids [B], weights [B]. Writes `tal` (the per-sample TAL,
    [B], by the formula as RDE's code writes it: exp, masked sum, clamp at 1e36, log) and
    `grad.image`, `grad.text`: the gradients of sum(weights * tal).
usage: rde_ref.py tse OUT_DIR
    A tiny CLIP (torch.nn.MultiheadAttention, 2 and 4 heads) with the token selection embedding
    layers. Writes OUT_DIR/model.safetensors (every parameter and BatchNorm statistic under
    ccma's names), OUT_DIR/io.safetensors (inputs and expected outputs) and OUT_DIR/config.json
    (the sizes). Outputs: `tse_i`, `tse_t` in eval mode for `images`, `ids` (captions of 1, 6 and
    10 words and one with none, whose expected feature is the zero vector); `train_tse_i`,
    `train_tse_t` in train mode for `train_images`, `train_ids` (every caption with at least k
    words, so which tokens are selected is never a tie) and the BatchNorm running statistics
    after that forward (`visul_emb_layer.mlp.bns.0.running_mean`, ... prefixed `after.`); `f_i`,
    `f_t`, the global features in eval mode. Every parameter and statistic is rounded to fp16
    precision first, so the fp16 copies below are exact. Also writes, as RDE's code saves them
    (torch.save of {model, num_epoch, iteration}; linear, convolution and attention weights and
    the projections in fp16 as its convert_weights leaves them, the rest fp32):
    OUT_DIR/rde_best.pth, RDE's whole model (CLIP's `logit_scale`, the image layer's unused
    `linear`, the unused second BatchNorms and the `num_batches_tracked` counters included), and
    OUT_DIR/irra_best.pth, the same CLIP alone in IRRA's layout (no TSE layers); and
    OUT_DIR/configs.yaml, the attention heads as a run's configs.yaml beside a best.pth records
    them.
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from clip_blocks import Stack


def tal(argv):
    inp = load_file(argv[0])
    tau, margin = float(argv[2]), float(argv[3])
    image = inp["image"].double().requires_grad_(True)
    text = inp["text"].double().requires_grad_(True)
    pid = inp["pids"].view(-1, 1)
    s = F.normalize(text, dim=1) @ F.normalize(image, dim=1).t()
    pos = (pid == pid.t()).double()
    neg = 1 - pos

    def rows(m):
        alpha = ((m / tau).exp() * pos / ((m / tau).exp() * pos).sum(1, keepdim=True)).detach()
        lse = ((m / tau).exp() * neg).sum(1).clamp(max=1e36).log()
        return (margin - (alpha * m).sum(1) + tau * lse).clamp(min=0)

    per = rows(s) + rows(s.t())
    (per * inp["weights"].double()).sum().backward()
    save_file({"tal": per.detach().float(), "grad.image": image.grad.float(), "grad.text": text.grad.float()}, argv[1])


E, VW, VH, VL, P, TW, TH, TL, VOCAB, CTX = 16, 32, 2, 2, 16, 32, 4, 2, 100, 12
H, W, RATIO = 64, 32, 0.5


class Clip(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = nn.Module()
        v = self.visual
        v.conv1 = nn.Conv2d(3, VW, P, P, bias=False)
        v.class_embedding = nn.Parameter(torch.randn(VW) * 0.1)
        v.positional_embedding = nn.Parameter(torch.randn((H // P) * (W // P) + 1, VW) * 0.1)
        v.ln_pre, v.ln_post = nn.LayerNorm(VW), nn.LayerNorm(VW)
        v.transformer = Stack(VW, VL, VH)
        v.proj = nn.Parameter(torch.randn(VW, E) * 0.2)
        self.token_embedding = nn.Embedding(VOCAB, TW)
        self.positional_embedding = nn.Parameter(torch.randn(CTX, TW) * 0.1)
        self.transformer = Stack(TW, TL, TH)
        self.ln_final = nn.LayerNorm(TW)
        self.text_projection = nn.Parameter(torch.randn(TW, E) * 0.2)

    def encode_image(self, x):
        v = self.visual
        x = v.conv1(x).flatten(2).transpose(1, 2)
        x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], 1) + v.positional_embedding
        x, weights = v.transformer.with_attention(v.ln_pre(x))
        return v.ln_post(x) @ v.proj, weights

    def encode_text(self, ids):
        causal = torch.full((CTX, CTX), float("-inf")).triu(1)
        x, weights = self.transformer.with_attention(self.token_embedding(ids) + self.positional_embedding, causal)
        return self.ln_final(x) @ self.text_projection, weights


class Mlp(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(d, d), nn.Linear(d, 2 * d)])
        self.bns = nn.ModuleList([nn.BatchNorm1d(d)])

    def forward(self, x):
        b, k, d = x.shape
        x = x.reshape(b * k, d)
        return self.layers[1](F.relu(self.bns[0](self.layers[0](x)))).view(b, k, -1)


class Side(nn.Module):
    def __init__(self, skip):
        super().__init__()
        setattr(self, skip, nn.Linear(E, 2 * E))
        self.skip_name = skip
        self.mlp = Mlp(E)

    def layer(self, tokens, picked):
        x = tokens.gather(1, picked[..., None].expand(-1, -1, tokens.shape[2]))
        x = F.normalize(x, dim=-1)
        return getattr(self, self.skip_name)(x) + self.mlp(x)


def image_tse(side, tokens, attn):
    k = int((attn.shape[1] - 1) * RATIO)
    row = attn[:, 0].clone()
    row[:, 0] = -1
    picked = row.topk(k, dim=-1)[1]
    return side.layer(tokens, picked).max(1)[0]


def text_tse(side, tokens, ids, attn):
    k = int((CTX - 2) * RATIO)
    b = ids.shape[0]
    eot = ids.argmax(-1)
    present = (ids != 0).float()
    a = attn.clone()
    a[torch.arange(b), :, eot] = -1
    a[:, :, 0] = -1
    row = a[torch.arange(b), eot] * present
    picked = row.topk(k, dim=-1)[1]
    h = side.layer(tokens, picked)
    words = (present.sum(1) - 2).clamp(0, k).long()
    out = []
    for i in range(b):
        n = int(words[i])
        out.append(h[i, :n].max(0)[0] if n > 0 else torch.zeros(h.shape[2]))
    return torch.stack(out)


def captions(lengths):
    ids = torch.zeros(len(lengths), CTX, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, VOCAB - 2, (n,))
        ids[i, 0] = VOCAB - 2  # SOT
        ids[i, n - 1] = VOCAB - 1  # EOT: the largest id
    return ids


def tse(argv):
    out = argv[0]
    torch.manual_seed(0)
    clip = Clip()
    image_side, text_side = Side("fc"), Side("linear")
    # RDE registers these and never uses them.
    image_side.linear = nn.Linear(E, 2 * E)
    image_side.mlp.bns.append(nn.BatchNorm1d(2 * E))
    text_side.mlp.bns.append(nn.BatchNorm1d(2 * E))
    with torch.no_grad():
        for side in [image_side, text_side]:
            bn = side.mlp.bns[0]
            bn.weight.copy_(1 + 0.2 * torch.randn(E))
            bn.bias.copy_(0.2 * torch.randn(E))
            bn.running_mean.copy_(0.1 * torch.randn(E))
            bn.running_var.copy_(1 + 0.5 * torch.rand(E))
        for m in [clip, image_side, text_side]:
            for t in list(m.parameters()) + [b for b in m.buffers() if b.is_floating_point()]:
                t.copy_(t.half().float())
    # Copies: the train-mode forward below updates the running statistics in place.
    rde = {f"base_model.{k}": v.detach().clone() for k, v in clip.state_dict().items()}
    rde["base_model.logit_scale"] = torch.tensor(4.6)
    for prefix, side in [("visul_emb_layer", image_side), ("texual_emb_layer", text_side)]:
        for k, v in side.state_dict().items():
            rde[f"{prefix}.{k}"] = v.detach().clone()
    unused = ("visul_emb_layer.linear.", "visul_emb_layer.mlp.bns.1.", "texual_emb_layer.mlp.bns.1.")
    state = {k: v for k, v in rde.items()
             if k != "base_model.logit_scale" and not k.endswith("num_batches_tracked") and not k.startswith(unused)}
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}

    images, ids = torch.randn(4, 3, H, W), captions([3, 8, 12, 2])
    train_images, train_ids = torch.randn(3, 3, H, W), captions([9, 12, 10])
    io = {"images": images, "ids": ids, "train_images": train_images, "train_ids": train_ids}
    clip.eval()
    with torch.no_grad():
        image_side.eval(), text_side.eval()
        tokens, attn = clip.encode_image(images)
        io["tse_i"] = image_tse(image_side, tokens, attn)
        io["f_i"] = tokens[:, 0]
        tokens, attn = clip.encode_text(ids)
        io["tse_t"] = text_tse(text_side, tokens, ids, attn)
        io["f_t"] = tokens[torch.arange(ids.shape[0]), ids.argmax(-1)]
        image_side.train(), text_side.train()
        tokens, attn = clip.encode_image(train_images)
        io["train_tse_i"] = image_tse(image_side, tokens, attn)
        tokens, attn = clip.encode_text(train_ids)
        io["train_tse_t"] = text_tse(text_side, tokens, train_ids, attn)
    for prefix, side in [("visul_emb_layer", image_side), ("texual_emb_layer", text_side)]:
        bn = side.mlp.bns[0]
        io[f"after.{prefix}.mlp.bns.0.running_mean"] = bn.running_mean
        io[f"after.{prefix}.mlp.bns.0.running_var"] = bn.running_var
    os.makedirs(out, exist_ok=True)
    save_file(state, os.path.join(out, "model.safetensors"))
    save_file({k: v.detach().contiguous() for k, v in io.items()}, os.path.join(out, "io.safetensors"))
    sizes = dict(embed_dim=E, vision_width=VW, vision_heads=VH, vision_layers=VL, patch=P, text_width=TW,
                 text_heads=TH, text_layers=TL, vocab_size=VOCAB, context_length=CTX, height=H, width=W,
                 select_ratio=RATIO)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(sizes, f)

    def half(name, t):
        fp16 = any(p in name for p in ("attn.", "mlp.c_", "conv1", "proj", ".fc.", ".linear.", "mlp.layers."))
        return t.detach().clone().half() if fp16 and t.is_floating_point() else t.detach().clone()

    for name, keep in [("rde_best.pth", lambda k: True), ("irra_best.pth", lambda k: k.startswith("base_model."))]:
        model = {k: half(k, v) for k, v in rde.items() if keep(k)}
        torch.save({"model": model, "num_epoch": 3, "iteration": 10}, os.path.join(out, name))
    with open(os.path.join(out, "configs.yaml"), "w") as f:
        f.write(f"vision_heads: {VH}\ntransformer_heads: {TH}\nselect_ratio: {RATIO}\n")


{"tal": tal, "tse": tse}[sys.argv[1]](sys.argv[2:])
