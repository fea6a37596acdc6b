"""Face-recognition ViTs (insightface / TransFace / LVFace) with training-free early exits.

Typical use::

    from vitfree.models import load, preprocess
    model = load("model.pt")                       # architecture inferred from the shapes
    x = preprocess(uint8_rgb_faces)                # (B, 3, 112, 112), (x/255 - 0.5)/0.5
    with torch.inference_mode():
        embs = model.forward_exits(x, [4, 6, 8, 10, 12])   # one pass, {k: (B, 512)}
    small = model.truncate(6)                      # 6 blocks + head, exportable
"""

from vitfree.models.checkpoint import (
    CheckpointError,
    describe_mismatch,
    infer_config,
    load,
    read_exit_heads,
    read_state_dict,
    save_exit_heads,
)
from vitfree.models.costs import ExitCost, exit_costs
from vitfree.models.export import export_onnx, export_torchscript
from vitfree.models.preprocess import preprocess
from vitfree.models.vit import (
    VARIANTS,
    Attention,
    Block,
    DropPath,
    ExitHead,
    Mlp,
    PatchEmbed,
    VisionTransformer,
    ViTConfig,
    create_model,
    get_config,
    vit_b,
    vit_b_dp005_mask_005,
    vit_h,
    vit_l,
    vit_l_dp005_mask_005,
    vit_s,
    vit_s_dp005_mask_0,
    vit_t,
    vit_t_dp005_mask0,
)

__all__ = [
    "VARIANTS",
    "Attention",
    "Block",
    "CheckpointError",
    "DropPath",
    "ExitCost",
    "ExitHead",
    "Mlp",
    "PatchEmbed",
    "ViTConfig",
    "VisionTransformer",
    "create_model",
    "describe_mismatch",
    "exit_costs",
    "export_onnx",
    "export_torchscript",
    "get_config",
    "infer_config",
    "load",
    "preprocess",
    "read_exit_heads",
    "read_state_dict",
    "save_exit_heads",
    "vit_b",
    "vit_b_dp005_mask_005",
    "vit_h",
    "vit_l",
    "vit_l_dp005_mask_005",
    "vit_s",
    "vit_s_dp005_mask_0",
    "vit_t",
    "vit_t_dp005_mask0",
]
