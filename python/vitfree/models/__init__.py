"""Face-recognition ViTs (insightface / TransFace / LVFace, CVLface / AdaFace) with
training-free early exits.

Layers, bottom to top (each imports only the ones above it): ``config`` (architecture, the
exit resolver), ``layers``, ``heads`` (the head interface and kinds), ``backbone`` (block
stepping), ``files`` (checkpoint and exit-head files), ``costs`` (FLOPs, speed), ``vit`` (the
model with exits), ``checkpoint`` (loading into a model), ``export``, ``preprocess``.

Typical use::

    from vitfree.models import load, preprocess
    model = load("model.pt")                       # architecture inferred from the shapes
    model = load("cvlface/model.safetensors")      # CVLface: net.* keys, config.json beside it
    model.config.family                            # "insightface" or "cvlface"
    x = preprocess(uint8_rgb_faces)                # (B, 3, 112, 112), (x/255 - 0.5)/0.5
    with torch.inference_mode():
        embs = model.forward_exits(x, [4, 6, 8, 10, 12])   # one pass, {k: (B, 512)}
    small = model.truncate(6)                      # 6 blocks + head, exportable
"""

from vitfree.errors import CheckpointError
from vitfree.models.backbone import ViTBackbone
from vitfree.models.checkpoint import demo_weights, infer_config, load, model_fingerprint
from vitfree.models.config import FAMILIES, resolve_exit, resolve_exits
from vitfree.models.costs import (
    ExitCost,
    exit_cost_records,
    exit_cost_table,
    exit_costs,
    measure_speed,
)
from vitfree.models.export import export_onnx, export_torchscript
from vitfree.models.files import (
    ExitHeadsFile,
    backbone_fingerprint,
    describe_mismatch,
    read_exit_head_specs,
    read_exit_heads,
    read_exit_heads_file,
    read_model_config,
    read_state_dict,
    save_exit_heads,
)
from vitfree.models.heads import (
    Head,
    HeadSpec,
    LGViTGlobalHead,
    LGViTLocalHead,
    LoRAHead,
    NormsHead,
    head_kinds,
)
from vitfree.models.preprocess import preprocess
from vitfree.models.vit import (
    VARIANTS,
    Attention,
    Block,
    DropPath,
    ExitHead,
    Intermediates,
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
    "FAMILIES",
    "VARIANTS",
    "Attention",
    "Block",
    "CheckpointError",
    "DropPath",
    "ExitCost",
    "ExitHead",
    "ExitHeadsFile",
    "Head",
    "HeadSpec",
    "Intermediates",
    "LGViTGlobalHead",
    "LGViTLocalHead",
    "LoRAHead",
    "Mlp",
    "NormsHead",
    "PatchEmbed",
    "ViTBackbone",
    "ViTConfig",
    "VisionTransformer",
    "backbone_fingerprint",
    "create_model",
    "demo_weights",
    "describe_mismatch",
    "exit_cost_records",
    "exit_cost_table",
    "exit_costs",
    "export_onnx",
    "export_torchscript",
    "get_config",
    "head_kinds",
    "infer_config",
    "load",
    "measure_speed",
    "model_fingerprint",
    "preprocess",
    "read_exit_head_specs",
    "read_exit_heads",
    "read_exit_heads_file",
    "read_model_config",
    "read_state_dict",
    "resolve_exit",
    "resolve_exits",
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
