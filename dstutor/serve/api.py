"""The HTTP API: /v1/models, /v1/completions, /v1/chat/completions (streaming or not), /health, /metrics.

Streaming follows what OpenAI clients rely on: a first chunk with only the role (chat), one id on
every chunk, a last chunk with finish_reason, an optional usage chunk, then `data: [DONE]`.
"""
from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dstutor.data.tokenizer import chat_prompt
from dstutor.serve.batcher import Batcher
from dstutor.serve.cache import LRUCache, RedisCache, cache_key
from dstutor.serve.engine import Engine, Generation
from dstutor.serve.schemas import ChatRequest, CompletionRequest, Sampling


class APIError(Exception):
    """An error the client caused, sent as OpenAI's error object with this status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": code}}, status_code=status)


MAX_BODY_BYTES = 1 << 20  # far above any prompt that fits the course models' context


class BodyLimit:
    """Refuse a request body over max_bytes with 413, counting it as it arrives, before anything parses it.

    The rest of the body is read and dropped (up to DRAIN_FACTOR × the limit), so the client, still
    uploading, gets the 413 instead of a reset connection.
    """

    DRAIN_FACTOR = 64

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and int(declared) > self.max_bytes:
            return await self._refuse(int(declared), receive, send, scope)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise APIError(413, self._message(seen, more=True), code="request_too_large")
            return message

        await self.app(scope, counted, send)

    def _message(self, size: int, more: bool = False) -> str:
        return (f"the request body has {'more than ' if more else ''}{size:,} bytes; this server accepts at most "
                f"{self.max_bytes:,}")

    async def _refuse(self, size: int, receive: Receive, send: Send, scope: Scope) -> None:
        drained, more = 0, True
        while more and drained <= self.DRAIN_FACTOR * self.max_bytes:
            message = await receive()
            drained += len(message.get("body", b""))
            more = message.get("more_body", False)
        await error_response(413, self._message(size), code="request_too_large")(scope, receive, send)


def parsed(schema: type[BaseModel], body: bytes) -> BaseModel:
    """The request body validated against `schema`; errors as FastAPI reports them (handled below)."""
    try:
        return schema.model_validate_json(body)
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from None


def create_app(engine: Engine, name: str, batcher: Batcher, cache: LRUCache | RedisCache,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app serving `engine` under the model id `name`.

    Bodies are limited to max_body_bytes; parsing, validation and tokenising run in a worker thread, so a
    large request never holds up the event loop that streams every other answer.
    """
    statuses: Counter = Counter()
    generated = Counter()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="dstutor", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.middleware("http")
    async def count_statuses(request: Request, call_next):
        response = await call_next(request)
        statuses[(request.url.path, response.status_code)] += 1
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            return error_response(400, f"malformed JSON body: {first.get('ctx', {}).get('error', first['msg'])}",
                                  code="invalid_json")
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        return error_response(400, f"{where or 'body'}: {first['msg']} (got {first.get('input')!r})", param=where)

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error_response(error.status, error.message, error.param, error.code)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": name}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "dstutor"}]}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        lines = [f'dstutor_requests_total{{path="{p}",status="{s}"}} {n}' for (p, s), n in sorted(statuses.items())]
        lines += [f"dstutor_batches_total {batcher.stats.batches}",
                  f"dstutor_batched_requests_total {batcher.stats.requests}",
                  f"dstutor_batch_size_mean {batcher.stats.mean_batch():.3f}",
                  f'dstutor_cache_hits_total{{kind="{cache.kind}"}} {cache.hits}',
                  f'dstutor_cache_misses_total{{kind="{cache.kind}"}} {cache.misses}',
                  f"dstutor_generated_tokens_total {generated['tokens']}"]
        return PlainTextResponse("\n".join(lines) + "\n")

    def generation(request: Sampling, prompt_ids: list[int], max_tokens: int | None) -> Generation:
        if request.model != name:
            raise APIError(404, f"model {request.model!r} is not served here; GET /v1/models lists {name!r}",
                           "model", "model_not_found")
        room = engine.context - len(prompt_ids)
        if room <= 0:
            raise APIError(400, f"the prompt has {len(prompt_ids)} tokens; this model's context is "
                                f"{engine.context} tokens", "messages" if isinstance(request, ChatRequest)
                           else "prompt", "context_length_exceeded")
        if max_tokens is not None and max_tokens > room:
            raise APIError(400, f"max_tokens={max_tokens} is too large: the prompt has {len(prompt_ids)} tokens "
                                f"and the context {engine.context}, so at most {room} new tokens fit",
                           "max_tokens", "context_length_exceeded")
        return Generation(prompt_ids, max_tokens or room, request.temperature, request.top_p, request.seed)

    async def answer(job: Generation) -> AsyncIterator[tuple[str, str | None, int]]:
        """(new text, None, tokens so far) as tokens decode, then (rest, finish_reason, tokens).

        Text is decoded from all tokens so far: a character whose UTF-8 bytes span tokens is held back
        until it is complete."""
        ids, sent = [], ""
        async for token, finish in batcher.submit(job):
            if finish is not None:
                yield engine.tokenizer.decode(ids)[len(sent):], finish, len(ids)
                return
            ids.append(token)
            generated["tokens"] += 1
            text = engine.tokenizer.decode(ids)
            if not text.endswith("\ufffd") and len(text) > len(sent):
                yield text[len(sent):], None, len(ids)
                sent = text

    async def complete(request: Sampling, job: Generation, chat: bool):
        key = cache_key(name, job.prompt_ids, job.max_tokens, job.temperature, job.top_p)
        cached = await run_in_threadpool(cache.get, key) if job.temperature == 0 else None
        headers = {"X-Cache": "hit" if cached else ("miss" if job.temperature == 0 else "bypass")}
        stream = pieces_from_cache(cached) if cached else answer(job)
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            events = sse(stream, chat, len(job.prompt_ids), include_usage, key if not cached and job.temperature == 0
                         else None)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        text, finish, tokens = "", None, 0
        async for piece, finish, tokens in stream:
            text += piece
        result = {"text": text, "finish_reason": finish, "completion_tokens": tokens}
        if not cached and job.temperature == 0:
            await run_in_threadpool(cache.set, key, result)
        return JSONResponse(final_body(result, chat, len(job.prompt_ids)), headers=headers)

    async def pieces_from_cache(result: dict) -> AsyncIterator[tuple[str, str | None, int]]:
        yield result["text"], None, result["completion_tokens"]
        yield "", result["finish_reason"], result["completion_tokens"]

    def final_body(result: dict, chat: bool, prompt_tokens: int) -> dict:
        choice = ({"index": 0, "message": {"role": "assistant", "content": result["text"]}} if chat
                  else {"index": 0, "text": result["text"], "logprobs": None})
        return {"id": new_id(chat), "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()), "model": name, "choices": [{**choice, "finish_reason": result["finish_reason"]}],
                "usage": usage(prompt_tokens, result["completion_tokens"])}

    async def sse(stream, chat: bool, prompt_tokens: int, include_usage: bool, cache_as: str | None):
        ident, created = new_id(chat), int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choices: list, **extra) -> str:
            body = {"id": ident, "object": kind, "created": created, "model": name, "choices": choices, **extra}
            # ASCII-only JSON: a raw U+2028 or U+0085 in the text would end the line for clients that split
            # lines the way Python's str.splitlines does, cutting the event in two.
            return f"data: {json.dumps(body)}\n\n"

        def choice(text: str | None, finish: str | None) -> dict:
            if chat:
                return {"index": 0, "delta": {} if text is None else {"content": text}, "finish_reason": finish}
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}

        if chat:
            yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        text, finish, completion_tokens = "", None, 0
        async for piece, finish, completion_tokens in stream:
            text += piece
            if piece:
                yield chunk([choice(piece, None)])
        yield chunk([choice(None, finish)])
        if include_usage:
            yield chunk([], usage=usage(prompt_tokens, completion_tokens))
        if cache_as:
            await run_in_threadpool(cache.set, cache_as, {"text": text, "finish_reason": finish,
                                                           "completion_tokens": completion_tokens})
        yield "data: [DONE]\n\n"

    def completion_job(body: bytes) -> tuple[CompletionRequest, Generation]:
        request = parsed(CompletionRequest, body)
        return request, generation(request, engine.encode(request.prompt), request.max_tokens)

    def chat_job(body: bytes) -> tuple[ChatRequest, Generation]:
        request = parsed(ChatRequest, body)
        prompt = chat_prompt(engine.tokenizer, [m.model_dump() for m in request.messages])
        return request, generation(request, prompt, request.max_completion_tokens or request.max_tokens)

    @app.post("/v1/completions")
    async def completions(http: Request):
        request, job = await run_in_threadpool(completion_job, await http.body())
        return await complete(request, job, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(http: Request):
        request, job = await run_in_threadpool(chat_job, await http.body())
        return await complete(request, job, chat=True)

    return app


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
