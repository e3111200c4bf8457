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
    after that forward (`visul_emb_layer.mlp.bns.0.running_mean`, ... prefixed `after.`).
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


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


E, VW, VH, VL, P, TW, TH, TL, VOCAB, CTX = 16, 32, 2, 2, 8, 32, 4, 2, 100, 12
H, W, RATIO = 32, 16, 0.5


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, w, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(w, heads, batch_first=True)
        self.ln_1, self.ln_2 = nn.LayerNorm(w), nn.LayerNorm(w)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = nn.Linear(w, 4 * w), nn.Linear(4 * w, w)

    def forward(self, x, mask=None):
        h = self.ln_1(x)
        a, weights = self.attn(h, h, h, need_weights=True, average_attn_weights=True, attn_mask=mask)
        x = x + a
        return x + self.mlp.c_proj(quick_gelu(self.mlp.c_fc(self.ln_2(x)))), weights


class Stack(nn.Module):
    """Residual blocks; returns the tokens and the last block's head-averaged attention."""

    def __init__(self, w, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList([Block(w, heads) for _ in range(layers)])

    def forward(self, x, mask=None):
        for b in self.resblocks:
            x, weights = b(x, mask)
        return x, weights


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
        x, weights = v.transformer(v.ln_pre(x))
        return v.ln_post(x) @ v.proj, weights

    def encode_text(self, ids):
        causal = torch.full((CTX, CTX), float("-inf")).triu(1)
        x, weights = self.transformer(self.token_embedding(ids) + self.positional_embedding, causal)
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
    with torch.no_grad():
        for side in [image_side, text_side]:
            bn = side.mlp.bns[0]
            bn.weight.copy_(1 + 0.2 * torch.randn(E))
            bn.bias.copy_(0.2 * torch.randn(E))
            bn.running_mean.copy_(0.1 * torch.randn(E))
            bn.running_var.copy_(1 + 0.5 * torch.rand(E))
    state = {f"base_model.{k}": v for k, v in clip.state_dict().items()}
    for prefix, side in [("visul_emb_layer", image_side), ("texual_emb_layer", text_side)]:
        for k, v in side.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                state[f"{prefix}.{k}"] = v
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}

    images, ids = torch.randn(4, 3, H, W), captions([3, 8, 12, 2])
    train_images, train_ids = torch.randn(3, 3, H, W), captions([9, 12, 10])
    io = {"images": images, "ids": ids, "train_images": train_images, "train_ids": train_ids}
    clip.eval()
    with torch.no_grad():
        image_side.eval(), text_side.eval()
        tokens, attn = clip.encode_image(images)
        io["tse_i"] = image_tse(image_side, tokens, attn)
        tokens, attn = clip.encode_text(ids)
        io["tse_t"] = text_tse(text_side, tokens, ids, attn)
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


{"tal": tal, "tse": tse}[sys.argv[1]](sys.argv[2:])
