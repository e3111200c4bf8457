"""A model folder as IRRA's train.py leaves it (CCMA's and RDE's train.py are IRRA's with other
keys): configs.yaml and best.pth.

usage: authors_folder.py OUT_DIR ROOT_DIR WEIGHTS.safetensors [--rde]

configs.yaml: IRRA's command-line options (utils/options.py: every flag with its default and type,
rewritten here from that list) parsed from the training command of IRRA's README, with what its
train.py adds (`distributed`, and `output_dir` made `<output_dir>/<dataset>/<time>_<name>` on the
machine that trained), dumped as its save_train_configs does: `yaml.dump(vars(args), f,
default_flow_style=False)`, so tuples keep Python's tag. With --rde, the keys RDE's options add.
best.pth: the tensors of WEIGHTS (a ccma checkpoint) but for CCMA's DCA stacks, which IRRA's model
does not have, saved as IRRA's Checkpointer saves the best epoch: torch.save of a dict with the
state dict under `model`, the optimizer's state, `num_epoch` and `iteration`.
"""
import argparse
import os
import sys

import torch
import yaml
from safetensors.torch import load_file

out_dir, root_dir, weights = sys.argv[1:4]
rde = "--rde" in sys.argv[4:]

# (flag, default, type or action): IRRA's options in their order.
OPTIONS = [
    ("local_rank", 0, int), ("name", "baseline", None), ("output_dir", "logs", None),
    ("log_period", 100, None), ("eval_period", 1, None), ("val_dataset", "test", None),
    ("resume", False, "store_true"), ("resume_ckpt_file", "", None),
    ("pretrain_choice", "ViT-B/16", None), ("temperature", 0.02, float), ("img_aug", False, "store_true"),
    ("cmt_depth", 4, int), ("masked_token_rate", 0.8, float), ("masked_token_unchanged_rate", 0.1, float),
    ("lr_factor", 5.0, float), ("MLM", False, "store_true"),
    ("loss_names", "sdm+id+mlm", None), ("mlm_loss_weight", 1.0, float), ("id_loss_weight", 1.0, float),
    ("img_size", (384, 128), tuple), ("stride_size", 16, int),
    ("text_length", 77, int), ("vocab_size", 49408, int),
    ("optimizer", "Adam", str), ("lr", 1e-5, float), ("bias_lr_factor", 2.0, float), ("momentum", 0.9, float),
    ("weight_decay", 4e-5, float), ("weight_decay_bias", 0.0, float), ("alpha", 0.9, float), ("beta", 0.999, float),
    ("num_epoch", 60, int), ("milestones", (20, 50), "int+"), ("gamma", 0.1, float),
    ("warmup_factor", 0.1, float), ("warmup_epochs", 5, int), ("warmup_method", "linear", str),
    ("lrscheduler", "cosine", str), ("target_lr", 0, float), ("power", 0.9, float),
    ("dataset_name", "CUHK-PEDES", None), ("sampler", "random", None), ("num_instance", 4, int),
    ("root_dir", "./data", None), ("batch_size", 128, int), ("test_batch_size", 512, int),
    ("num_workers", 8, int),
]
RDE_OPTIONS = [("noisy_rate", 0.2, float), ("noisy_file", "", str), ("tau", 0.015, float),
               ("select_ratio", 0.3, float), ("margin", 0.1, float), ("txt_aug", False, "store_true")]

parser = argparse.ArgumentParser()
for flag, default, kind in OPTIONS + (RDE_OPTIONS if rde else []):
    if kind == "store_true":
        parser.add_argument(f"--{flag}", default=default, action="store_true")
    elif kind == "int+":
        parser.add_argument(f"--{flag}", default=default, type=int, nargs="+")
    elif kind is None:
        parser.add_argument(f"--{flag}", default=default)
    else:
        parser.add_argument(f"--{flag}", default=default, type=kind)
# IRRA's `--test` switch stores False under `training`.
parser.add_argument("--test", dest="training", default=True, action="store_false")

# The training command of IRRA's README.
args = parser.parse_args(["--name", "iira", "--img_aug", "--batch_size", "64", "--MLM",
                          "--loss_names", "sdm+mlm+id", "--dataset_name", "CUHK-PEDES",
                          "--root_dir", root_dir, "--num_epoch", "60"])
args.distributed = False
args.output_dir = os.path.join(args.output_dir, args.dataset_name, "20230101_120000_iira")

os.makedirs(out_dir, exist_ok=True)
with open(os.path.join(out_dir, "configs.yaml"), "w") as f:
    yaml.dump(vars(args), f, default_flow_style=False)

state = {k: v for k, v in load_file(weights).items() if not k.startswith("dca_")}
torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "num_epoch": 60, "iteration": 0},
           os.path.join(out_dir, "best.pth"))
