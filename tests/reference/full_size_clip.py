"""A full-size random CLIP ViT-B/16 in OpenAI's TorchScript layout, as `ViT-B-16.pt` is: 16x16
patches on a 14x14 grid (224x224), 12 x 768 vision blocks, 12 x 512 text blocks, 77 tokens, the
49,408-token vocabulary, fp16 parameters, the size entries as buffers.

usage: full_size_clip.py OUT.pt
"""
import sys

import torch
import torch.nn as nn

torch.manual_seed(0)


class Block(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.attn = nn.MultiheadAttention(w, w // 64)
        self.ln_1, self.ln_2 = nn.LayerNorm(w), nn.LayerNorm(w)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = nn.Linear(w, 4 * w), nn.Linear(4 * w, w)

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp.c_proj(self.mlp.c_fc(self.ln_2(x)))


class Stack(nn.Module):
    def __init__(self, w, layers):
        super().__init__()
        self.resblocks = nn.Sequential(*[Block(w) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class Visual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 768, 16, 16, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(768) * 768 ** -0.5)
        self.positional_embedding = nn.Parameter(torch.randn(14 * 14 + 1, 768) * 768 ** -0.5)
        self.ln_pre, self.ln_post = nn.LayerNorm(768), nn.LayerNorm(768)
        self.transformer = Stack(768, 12)
        self.proj = nn.Parameter(torch.randn(768, 512) * 768 ** -0.5)

    def forward(self, x):
        x = self.conv1(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], 1) + self.positional_embedding
        return self.ln_post(self.transformer(self.ln_pre(x).transpose(0, 1)).transpose(0, 1)[:, 0]) @ self.proj


class Clip(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = Visual()
        self.token_embedding = nn.Embedding(49408, 512)
        self.positional_embedding = nn.Parameter(torch.randn(77, 512) * 0.01)
        self.transformer = Stack(512, 12)
        self.ln_final = nn.LayerNorm(512)
        self.text_projection = nn.Parameter(torch.randn(512, 512) * 512 ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))
        for name, value in [("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)]:
            self.register_buffer(name, torch.tensor(value))

    def forward(self, image):
        return self.visual(image)


clip = Clip().eval()
with torch.no_grad():
    traced = torch.jit.trace(clip, torch.zeros(1, 3, 224, 224))
traced.half()
torch.jit.save(traced, sys.argv[1])
