"""A tiny random Hugging Face `transformers` CLIPModel and its features, for ccma's reader of that
layout.

usage: hf_ref.py OUT_DIR
Writes, in OUT_DIR:
  hf/                save_pretrained of the model (model.safetensors, config.json); its heads differ
                     from width / 64, so they must come from config.json
  io.safetensors     images [3,3,64,64] and [3,3,64,32], caption ids [3,24] (EOT = the largest id),
                     f_i from get_image_features at the model's own 64x64, f_i_64x32 with the
                     positional grid resized bilinearly (align_corners=False) to 4x2, f_t from
                     get_text_features
"""
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel

out = sys.argv[1]
torch.manual_seed(0)
VOCAB, CTX = 1000, 24
config = CLIPConfig(
    text_config=dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=2, max_position_embeddings=CTX, bos_token_id=VOCAB - 2,
                     eos_token_id=VOCAB - 1, pad_token_id=0),
    vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                       image_size=64, patch_size=16),
    projection_dim=32,
)
model = CLIPModel(config).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if "norm" in name:  # non-trivial LayerNorms
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
        elif name != "logit_scale":
            p.copy_(torch.randn_like(p) * 0.1)
model.save_pretrained(os.path.join(out, "hf"), safe_serialization=True)


def pooled(o):
    return o if torch.is_tensor(o) else o.pooler_output


with torch.no_grad():
    images = torch.randn(3, 3, 64, 64)
    narrow = torch.randn(3, 3, 64, 32)
    ids = torch.zeros(3, CTX, dtype=torch.long)
    for i, n in enumerate([5, 11, CTX]):
        ids[i, :n] = torch.randint(1, VOCAB - 2, (n,))
        ids[i, 0], ids[i, n - 1] = VOCAB - 2, VOCAB - 1
    f_i = pooled(model.get_image_features(pixel_values=images))
    f_t = pooled(model.get_text_features(input_ids=ids))
    # 64x32 by hand: the same tower with the 4x4 positional grid resized bilinearly to 4x2.
    vm = model.vision_model
    emb = vm.embeddings
    pos = emb.position_embedding.weight
    grid = pos[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(4, 2), mode="bilinear", align_corners=False).permute(0, 2, 3, 1).reshape(8, -1)
    x = emb.patch_embedding(narrow).flatten(2).transpose(1, 2)
    x = torch.cat([emb.class_embedding.expand(3, 1, -1), x], 1) + torch.cat([pos[:1], grid], 0)
    h = vm.encoder(inputs_embeds=vm.pre_layrnorm(x)).last_hidden_state
    f_i_narrow = model.visual_projection(vm.post_layernorm(h[:, 0]))

save_file({"images": images, "narrow": narrow, "ids": ids, "f_i": f_i.contiguous(), "f_t": f_t.contiguous(),
           "f_i_64x32": f_i_narrow.contiguous()}, os.path.join(out, "io.safetensors"))
