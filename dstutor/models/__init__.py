"""DeepSeek-V3-style models from scratch: config, attention (MHA/GQA/MLA), DeepSeekMoE, MTP, the LM."""
from dstutor.models.attention import KVCache
from dstutor.models.baseline import dense_baseline_config
from dstutor.models.config import DeepSeekConfig
from dstutor.models.model import DeepSeekLM, LMOutput
from dstutor.models.params import parameter_counts

__all__ = ["DeepSeekConfig", "DeepSeekLM", "LMOutput", "KVCache", "dense_baseline_config", "parameter_counts"]
