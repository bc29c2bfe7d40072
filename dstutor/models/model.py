"""DeepSeekLM: the DeepSeek-V3 architecture, readable top to bottom (embeddings → blocks → head, + MTP).

Module names follow transformers' DeepseekV3ForCausalLM, so weights convert one to one (models/hf.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from dstutor.metrics import IGNORE_INDEX
from dstutor.models.attention import KVCache, build_attention
from dstutor.models.config import DeepSeekConfig
from dstutor.models.layers import RMSNorm, SwiGLU, rope_angles
from dstutor.models.moe import DeepSeekMoE, Experts, Router



@dataclass
class LMOutput:
    """Logits plus every loss term reported separately, and what the chapters plot."""

    logits: torch.Tensor                      # (batch, seq, vocab)
    loss: torch.Tensor | None = None          # main + λ·mean(MTP) + balance: what training minimises
    main_loss: torch.Tensor | None = None     # next-token cross-entropy
    mtp_loss: torch.Tensor | None = None      # mean cross-entropy of the MTP depths (V3 eq. 24–25)
    balance_loss: torch.Tensor | None = None  # sum of the MoE layers' balance losses
    expert_load: torch.Tensor | None = None   # (MoE layers, E) tokens routed to each expert
    attentions: list[torch.Tensor] = field(default_factory=list)  # per layer (batch, heads, q, k)

    def logged(self) -> dict[str, torch.Tensor]:
        """The terms a training loop logs besides the loss: MTP and balance losses, the busiest expert's load."""
        terms = {name: value for name, value in (("mtp_loss", self.mtp_loss), ("balance_loss", self.balance_loss))
                 if value is not None}
        if self.expert_load is not None:  # the busiest expert's tokens over the mean, averaged over MoE layers
            terms["max_load_ratio"] = (self.expert_load.max(-1).values / self.expert_load.mean(-1)).mean()
        return terms


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then + FFN(norm(x)); the FFN is dense or DeepSeekMoE."""

    def __init__(self, config: DeepSeekConfig, index: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = build_attention(config, index)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.is_moe = config.is_moe_layer(index)
        self.mlp = DeepSeekMoE(config) if self.is_moe else SwiGLU(config.hidden_size, config.intermediate_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, rope, cache=None, need_weights=False, absorb=False):
        attn_kwargs = {"absorb": absorb} if absorb else {}
        h, weights = self.self_attn(self.input_layernorm(x), rope, cache, need_weights, **attn_kwargs)
        x = x + self.dropout(h)
        if self.is_moe:
            h, balance, load = self.mlp(self.post_attention_layernorm(x))
        else:
            h, balance, load = self.mlp(self.post_attention_layernorm(x)), None, None
        return x + self.dropout(h), weights, balance, load


class MTPModule(nn.Module):
    """One multi-token-prediction depth (V3 §2.2): combine h^{k-1}_i with Emb(t_{i+k}), run one block."""

    def __init__(self, config: DeepSeekConfig, index: int):
        super().__init__()
        self.hnorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.enorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)
        self.block = DecoderLayer(config, index)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class DeepSeekBackbone(nn.Module):
    """Embeddings, decoder layers and the final norm (transformers calls this `model`)."""

    def __init__(self, config: DeepSeekConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class DeepSeekLM(nn.Module):
    """A DeepSeek-V3-style causal language model."""

    def __init__(self, config: DeepSeekConfig):
        super().__init__()
        self.config = config
        self.model = DeepSeekBackbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.gradient_checkpointing = False  # recompute each layer in backward instead of storing activations
        # MTP modules share the embedding and output head with the main model (V3 §2.2).
        self.mtp = nn.ModuleList(MTPModule(config, config.num_layers + d) for d in range(config.mtp_depth))
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, Experts):  # 3-D weights, one slice per expert
            nn.init.normal_(module.gate_up_proj, std=std)
            nn.init.normal_(module.down_proj, std=std)
        elif isinstance(module, Router):
            nn.init.normal_(module.weight, std=std)

    def gradient_checkpointing_enable(self) -> None:
        """Trade compute for memory: keep only layer inputs, recompute the rest during backward."""
        self.gradient_checkpointing = True

    def _rope(self, layer: nn.Module, start: int, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        if start + length > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {start + length} tokens exceeds max_position_embeddings="
                             f"{self.config.max_position_embeddings}")
        positions = torch.arange(start, start + length, device=device)
        return rope_angles(positions, layer.self_attn.rope_dim, self.config.rope_theta)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, cache: KVCache | None = None,
                need_weights: bool = False, absorb: bool = False, label_smoothing: float = 0.0) -> LMOutput:
        """Logits for input_ids (batch, seq); with labels (usually input_ids; -100 ignored), the losses.

        label_smoothing mixes the one-hot targets of the main loss with a uniform distribution.
        """
        if absorb and self.config.attention != "mla":
            raise ValueError(f"absorb=True is an MLA inference path; this model uses {self.config.attention!r}")
        x, attentions, balances, loads = self._decode(input_ids, cache, need_weights, absorb)
        logits = self.lm_head(self.model.norm(x))
        out = LMOutput(logits, attentions=attentions,
                       expert_load=torch.stack(loads) if loads else None)
        if labels is None:
            return out
        out.main_loss = _next_token_loss(logits, labels, shift=1, label_smoothing=label_smoothing)
        out.loss = out.main_loss
        if self.mtp:
            out.mtp_loss = self._mtp_loss(x, input_ids, labels, balances)
            out.loss = out.loss + self.config.mtp_loss_weight * out.mtp_loss
        if balances:
            out.balance_loss = torch.stack(balances).sum()
            out.loss = out.loss + out.balance_loss
        return out

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The normalised last-layer states (batch, seq, hidden) the LM head reads: features for task heads."""
        return self.model.norm(self._decode(input_ids, None, False, False)[0])

    def _decode(self, input_ids: torch.Tensor, cache: KVCache | None, need_weights: bool, absorb: bool):
        """Embeddings through every decoder layer: (states, attention maps, balance losses, expert loads)."""
        start = len(cache) if cache is not None else 0
        x = self.embed_dropout(self.model.embed_tokens(input_ids))
        rope = self._rope(self.model.layers[0], start, input_ids.shape[1], input_ids.device)
        attentions, balances, loads = [], [], []
        for layer in self.model.layers:
            if self.training and self.config.layer_drop and torch.rand(()) < self.config.layer_drop:
                continue  # LayerDrop: the residual stream passes through unchanged (not zeros; see chapter 07)
            if self.training and self.gradient_checkpointing:
                x, weights, balance, load = checkpoint(layer, x, rope, cache, need_weights, absorb,
                                                       use_reentrant=False)
            else:
                x, weights, balance, load = layer(x, rope, cache, need_weights, absorb)
            attentions += [weights] if need_weights else []
            balances += [balance] if balance is not None else []
            loads += [load] if load is not None else []
        return x, attentions, balances, loads

    def _mtp_loss(self, hidden: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor,
                  balances: list) -> torch.Tensor:
        # Depth k: position i sees h^{k-1}_i and the embedding of t_{i+k}, and predicts t_{i+k+1}.
        losses, length = [], input_ids.shape[1]
        for k, module in enumerate(self.mtp, start=1):
            hidden = hidden[:, : length - k]
            emb = self.model.embed_tokens(input_ids[:, k:])
            h = module.eh_proj(torch.cat([module.hnorm(hidden), module.enorm(emb)], dim=-1))
            rope = self._rope(module.block, 0, h.shape[1], h.device)
            hidden, _, balance, _ = module.block(h, rope)
            balances += [balance] if balance is not None else []
            losses.append(_next_token_loss(self.lm_head(module.norm(hidden)), labels[:, k:], shift=1))
        return torch.stack(losses).mean()

    def after_optimizer_step(self, applied: bool = True) -> None:
        """Hook for training loops: apply the aux-loss-free bias update of every MoE layer.

        applied=False (the step was skipped) discards the step's expert loads instead, so they do not
        leak into the next update.
        """
        for module in self.modules():
            if isinstance(module, DeepSeekMoE) and applied:
                module.update_bias()
            elif isinstance(module, DeepSeekMoE):
                module.pending_load.zero_()

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 absorb: bool | None = None, repetition_penalty: float = 1.0, top_p: float = 1.0,
                 eos_token_id: int | None = None) -> torch.Tensor:
        """Continue input_ids (batch, seq) using the KV cache. temperature 0 is greedy decoding.

        top_k and top_p (nucleus) restrict sampling to the most likely tokens; repetition_penalty > 1
        makes every token already in the sequence less likely (CTRL, Keskar et al. 2019). With
        eos_token_id, decoding stops once every row has emitted it (the output is then shorter).
        """
        if temperature < 0 or (top_k is not None and top_k < 1) or repetition_penalty <= 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature ≥ 0, top_k ≥ 1 or None, repetition_penalty > 0 and 0 < top_p ≤ 1, "
                             f"got {temperature}, {top_k}, {repetition_penalty}, {top_p}")
        absorb = self.config.attention == "mla" if absorb is None else absorb
        cache = KVCache(self.config.num_layers)
        tokens, step = input_ids, input_ids
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for _ in range(max_new_tokens):
            logits = self(step, cache=cache, absorb=absorb).logits[:, -1].float()
            if repetition_penalty != 1.0:
                logits = penalise_repeats(logits, tokens, repetition_penalty)
            step = sample_next(logits, temperature, top_k, generator, top_p)[:, None]
            tokens = torch.cat([tokens, step], dim=1)
            if eos_token_id is not None:
                finished |= step[:, 0] == eos_token_id
                if finished.all():  # rows that ended earlier keep decoding until then, as without eos
                    break
        return tokens


def _next_token_loss(logits: torch.Tensor, labels: torch.Tensor, shift: int,
                     label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of logits[:, i] against labels[:, i + shift] (labels of -100 are ignored)."""
    # Shift the labels, not the logits: slicing the (large) logits would make autograd allocate and
    # zero a full-size gradient buffer; the last `shift` positions get the ignore label instead.
    targets = F.pad(labels[:, shift:], (0, shift), value=IGNORE_INDEX)
    logits = logits[:, : labels.shape[1]]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX,
                           label_smoothing=label_smoothing)


def penalise_repeats(logits: torch.Tensor, tokens: torch.Tensor, penalty: float) -> torch.Tensor:
    """Divide the positive logits of tokens already in `tokens` by penalty and multiply the negative ones."""
    seen = logits.gather(1, tokens)
    return logits.scatter(1, tokens, torch.where(seen < 0, seen * penalty, seen / penalty))


def nucleus_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability adds up to ≥ top_p (Holtzman et al. 2020)."""
    ordered, order = logits.sort(dim=-1, descending=True)
    before = ordered.softmax(dim=-1).cumsum(dim=-1) - ordered.softmax(dim=-1)  # mass of the tokens ranked above
    drop = (before >= top_p).scatter(-1, order, before >= top_p)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None,
                generator: torch.Generator | None, top_p: float = 1.0) -> torch.Tensor:
    """The next token of each row of logits (batch, vocab): greedy at temperature 0, else sampled after top-k and top-p."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        threshold = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    if top_p < 1.0:
        logits = nucleus_filter(logits, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
