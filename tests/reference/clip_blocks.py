"""CLIP's residual attention blocks in OpenAI's layout (`resblocks.N.attn`, `ln_1`, `ln_2`,
`mlp.c_fc`, `mlp.c_proj`), written from METHOD.md section 2 and shared by the references that
build a CLIP (model_ref.py, rde_ref.py)."""
import torch
import torch.nn as nn


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, w, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(w, heads, batch_first=True)
        self.ln_1, self.ln_2 = nn.LayerNorm(w), nn.LayerNorm(w)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = nn.Linear(w, 4 * w), nn.Linear(4 * w, w)

    def forward(self, x, mask=None, need_weights=False):
        """The block's output and, with `need_weights`, its head-averaged attention (else None)."""
        h = self.ln_1(x)
        a, weights = self.attn(h, h, h, need_weights=need_weights, average_attn_weights=True, attn_mask=mask)
        x = x + a
        return x + self.mlp.c_proj(quick_gelu(self.mlp.c_fc(self.ln_2(x)))), weights


class Stack(nn.Module):
    def __init__(self, w, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList([Block(w, heads) for _ in range(layers)])

    def forward(self, x, mask=None):
        return self.with_attention(x, mask, need_weights=False)[0]

    def with_attention(self, x, mask=None, need_weights=True):
        """The tokens and the last block's head-averaged attention."""
        for b in self.resblocks:
            x, weights = b(x, mask, need_weights)
        return x, weights
