"""Configuration of a DeepSeek-style model (DeepSeek-V3 architecture, tiny to small scale)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

ATTENTION_KINDS = ("mla", "mha", "gqa")
SCORING_FUNCS = ("sigmoid", "softmax")


@dataclass
class DeepSeekConfig:
    """Every size of the model. Defaults: the 'nano' preset (≈2 M parameters, trains on a CPU)."""

    vocab_size: int = 4096           # tokens in the vocabulary (the tokenizer's size)
    hidden_size: int = 128           # width of the residual stream, d (V3: 7168)
    num_layers: int = 4              # transformer blocks (V3: 61)
    num_heads: int = 4               # attention heads n_h (V3: 128)
    attention: str = "mla"           # "mla" (latent KV, V2 §2.1), "mha" or "gqa" (for comparison)
    num_kv_heads: int = 2            # key/value heads for "gqa" (divides num_heads); "mha" uses num_heads
    head_dim: int = 32               # per-head size for "mha"/"gqa"
    q_lora_rank: int | None = None   # MLA query compression rank d_c' (V3: 1536); None: no compression
    kv_lora_rank: int = 32           # MLA latent size d_c, what the cache stores (V3: 512)
    qk_nope_head_dim: int = 32       # MLA per-head query/key size without position (V3: 128)
    qk_rope_head_dim: int = 16       # MLA decoupled RoPE size d_h^R, shared by all heads' keys (V3: 64)
    v_head_dim: int = 32             # MLA per-head value size (V3: 128)
    intermediate_size: int = 192     # hidden size of dense SwiGLU layers (V3: 18432 = 9 experts' width)
    moe_intermediate_size: int = 64  # hidden size of one expert (V3: 2048)
    n_routed_experts: int = 8        # routed experts per MoE layer; 0 makes every layer dense (V3: 256)
    n_shared_experts: int = 1        # always-on shared experts (V3: 1)
    num_experts_per_tok: int = 2     # routed experts per token K_r (V3: 8)
    n_group: int = 1                 # expert groups for group-limited routing (V3: 8)
    topk_group: int = 1              # groups a token may use (V3: 4); ≤ n_group
    routed_scaling_factor: float = 1.0  # multiplies routed gates (V3: 2.5)
    norm_topk_prob: bool = True      # renormalise the top-K gates to sum to 1 (V3: True)
    scoring_func: str = "sigmoid"    # router affinity: "sigmoid" (V3) or "softmax" (V2 / classic MoE)
    first_k_dense_replace: int = 1   # the first k layers use a dense FFN instead of MoE (V3: 3)
    bias_update_speed: float = 0.0   # γ of aux-loss-free balancing (V3: 0.001); 0 turns it off
    seq_aux_alpha: float = 0.0       # α of the sequence-wise balance loss (V3: 0.0001); 0: off
    aux_loss_alpha: float = 0.0      # α of the classic batch-level auxiliary loss (V2-style); 0: off
    mtp_depth: int = 0               # multi-token prediction modules D (V3: 1); 0: off
    mtp_loss_weight: float = 0.3     # λ weighting the MTP loss (V3: 0.3, later 0.1)
    max_position_embeddings: int = 512  # longest sequence; bounds generate()
    rope_theta: float = 10000.0      # RoPE base frequency
    rope_interleave: bool = True     # rotate (x0,x1),(x2,x3)… pairs as DeepSeek does; False: halves
    rms_norm_eps: float = 1e-6       # RMSNorm epsilon
    initializer_range: float = 0.02  # std of the normal weight init
    dropout: float = 0.0             # dropout on embeddings and on each sublayer's output (training only)
    layer_drop: float = 0.0          # probability that a training step skips a whole decoder layer (LayerDrop)

    PRESETS = {
        "nano": {},
        "micro": dict(vocab_size=8000, hidden_size=256, num_layers=4, num_heads=4, q_lora_rank=128,
                      kv_lora_rank=64, intermediate_size=768, moe_intermediate_size=256),
        "small": dict(vocab_size=16000, hidden_size=768, num_layers=12, num_heads=12, q_lora_rank=384,
                      kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
                      intermediate_size=1024, moe_intermediate_size=256, n_routed_experts=8,
                      num_experts_per_tok=3, n_group=2, topk_group=1, routed_scaling_factor=2.5,
                      max_position_embeddings=2048),
        # DeepSeek-V3's shapes (its config.json; MTP depth 1). 671 B parameters: build it on the meta device
        # to count or inspect it, never to run it here.
        "v3": dict(vocab_size=129280, hidden_size=7168, num_layers=61, num_heads=128, q_lora_rank=1536,
                   kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                   intermediate_size=18432, moe_intermediate_size=2048, n_routed_experts=256, n_shared_experts=1,
                   num_experts_per_tok=8, n_group=8, topk_group=4, routed_scaling_factor=2.5,
                   first_k_dense_replace=3, bias_update_speed=0.001, seq_aux_alpha=0.0001, mtp_depth=1),
    }

    @classmethod
    def preset(cls, name: str, **overrides) -> "DeepSeekConfig":
        """'nano' (2.0 M params, CPU), 'micro' (10.5 M), 'small' (109 M total, 76 M active; GPU) or 'v3' (shapes only)."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def __post_init__(self) -> None:
        self.validate()

    def replace(self, **changes) -> "DeepSeekConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def kv_heads(self) -> int:
        """Key/value heads actually used by the attention kind."""
        return {"mha": self.num_heads, "gqa": self.num_kv_heads, "mla": self.num_heads}[self.attention]

    def is_moe_layer(self, index: int) -> bool:
        """Whether block `index` uses DeepSeekMoE (else a dense SwiGLU FFN)."""
        return self.n_routed_experts > 0 and index >= self.first_k_dense_replace

    def validate(self) -> None:
        """Raise ValueError naming the first bad field, its value and what is allowed."""
        def bad(field: str, allowed: str) -> None:
            raise ValueError(f"DeepSeekConfig.{field}={getattr(self, field)!r} is invalid: {allowed}")

        positive = ["vocab_size", "hidden_size", "num_layers", "num_heads", "head_dim", "kv_lora_rank",
                    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "intermediate_size",
                    "moe_intermediate_size", "num_experts_per_tok", "n_group", "topk_group",
                    "max_position_embeddings", "num_kv_heads"]
        for field in positive:
            if not isinstance(getattr(self, field), int) or getattr(self, field) <= 0:
                bad(field, "must be a positive integer")
        for field in ("n_routed_experts", "n_shared_experts", "first_k_dense_replace", "mtp_depth"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < 0:
                bad(field, "must be an integer ≥ 0")
        for field in ("bias_update_speed", "seq_aux_alpha", "aux_loss_alpha", "mtp_loss_weight",
                      "routed_scaling_factor", "rms_norm_eps", "initializer_range", "rope_theta"):
            if getattr(self, field) < 0:
                bad(field, "must be ≥ 0")
        for field in ("dropout", "layer_drop"):
            if not 0 <= getattr(self, field) < 1:
                bad(field, "must be a probability in [0, 1)")
        if self.q_lora_rank is not None and (not isinstance(self.q_lora_rank, int) or self.q_lora_rank <= 0):
            bad("q_lora_rank", "must be None (no query compression) or a positive integer")
        if self.attention not in ATTENTION_KINDS:
            bad("attention", f"choose one of {ATTENTION_KINDS}")
        if self.scoring_func not in SCORING_FUNCS:
            bad("scoring_func", f"choose one of {SCORING_FUNCS}")
        if self.attention == "gqa" and self.num_heads % self.num_kv_heads:
            bad("num_kv_heads", f"must divide num_heads={self.num_heads}")
        if self.qk_rope_head_dim % 2 or (self.attention != "mla" and self.head_dim % 2):
            bad("qk_rope_head_dim" if self.qk_rope_head_dim % 2 else "head_dim", "RoPE needs an even size")
        if self.n_routed_experts:
            if self.num_experts_per_tok > self.n_routed_experts:
                bad("num_experts_per_tok", f"must be ≤ n_routed_experts={self.n_routed_experts}")
            if self.n_routed_experts % self.n_group:
                bad("n_group", f"must divide n_routed_experts={self.n_routed_experts}")
            if self.topk_group > self.n_group:
                bad("topk_group", f"must be ≤ n_group={self.n_group}")
            per_group = self.n_routed_experts // self.n_group
            if self.n_group > 1 and per_group < 2:
                bad("n_group", "group-limited routing scores a group by its top-2 experts: "
                               "need ≥ 2 experts per group")
            if self.num_experts_per_tok > self.topk_group * per_group:
                bad("num_experts_per_tok", f"must be ≤ topk_group × experts per group = "
                                           f"{self.topk_group * per_group}")
