"""Request bodies of the OpenAI-compatible API, with the types and ranges the server accepts."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr


class StreamOptions(BaseModel):
    include_usage: StrictBool = False  # one more chunk before [DONE] with the token counts


class Sampling(BaseModel):
    """Fields both endpoints share; unknown fields (user, logprobs…) are ignored as clients send them."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    max_tokens: StrictInt | None = Field(None, gt=0)                 # None: what the context leaves
    temperature: float = Field(1.0, ge=0, le=2, strict=True)         # 0: greedy (and cacheable); ints accepted
    top_p: float = Field(1.0, gt=0, le=1, strict=True)
    n: StrictInt = Field(1, ge=1, le=1)                              # one choice per request here
    seed: StrictInt | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None


class CompletionRequest(Sampling):
    prompt: StrictStr = Field(min_length=1)
    max_tokens: StrictInt | None = Field(16, gt=0)                   # OpenAI's default for completions


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: StrictStr


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, gt=0)      # the newer name for max_tokens
