"""Transfer learning, the classic three modes: train only a new classifier, the last N blocks, or all.

Every registered model exposes `features` (an nn.Sequential of blocks) and `head` (the classifier).
"""

import torch.nn as nn

from edgecnn.models import checkpoint
from edgecnn.core.errors import EdgecnnError


def load_pretrained(model: nn.Module, run: str, model_name: str) -> list[str]:
    """Copy every weight whose name and shape match from RUN_DIR; return the names left new."""
    source, spec = checkpoint.load(run)
    if spec["model"]["name"] != model_name:
        raise EdgecnnError(f"finetune.run {run} holds a {spec['model']['name']}, the recipe builds "
                           f"{model_name}: use a run of the same model")
    own, theirs = model.state_dict(), source.state_dict()
    keep = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(keep, strict=False)
    return sorted(set(own) - set(keep))


def freeze(model: nn.Module, mode: str, last_n: int = 1) -> None:
    """Set requires_grad by mode: 'classifier' (head only), 'last_n' (head + last N blocks), 'all'."""
    blocks = list(model.features)
    if mode == "last_n" and not 1 <= last_n <= len(blocks):
        raise EdgecnnError(f"finetune.last_n={last_n}: this model has {len(blocks)} blocks")
    trainable = {"classifier": [], "last_n": blocks[-last_n:], "all": blocks}[mode] + [model.head]
    for p in model.parameters():
        p.requires_grad = False
    for module in trainable:
        for p in module.parameters():
            p.requires_grad = True


def set_train_mode(model: nn.Module) -> None:
    """model.train(), but BatchNorm in frozen parts keeps its running statistics."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()
