"""dstutor serve: the OpenAI API through the real `openai` client, the streaming contract, each bad request's
4xx, concurrent requests batched and answered as alone, the Redis cache on a real redis-server, the load test."""
import asyncio
import json
import shutil
import time

import httpx
import pytest
import redis
import torch
from openai import OpenAI

from dstutor.commands import main as cli
from dstutor.data.tokenizer import train_tokenizer
from dstutor.models.hf import save_pretrained
from dstutor.serve.cache import LRUCache
from dstutor.serve.engine import Engine, Generation
from dstutor.serve.loadtest import run_load, scrape_counters, summarize
from dstutor.serve.process import RedisProcess, ServerProcess, free_port
from tiny import tiny_lm

TEXTS = ["床前明月光，疑是地上霜。", "房间很干净，服务也很好。", "def add(a, b):\n    return a + b\n", "hello world"]
PROMPTS = ["床前", "房间", "def", "hello", "服务", "明月", "return", "world"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "tiny" / "model"
    save_pretrained(tiny_lm(vocab_size=300), folder)
    train_tokenizer(TEXTS * 20, vocab_size=300, min_frequency=1).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    with ServerProcess(checkpoint, max_batch=8, max_wait_ms=50, log=tmp_path_factory.mktemp("log") / "server.log") as s:
        yield s


def post(server, path: str, body) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(server.base_url + path, content=content, headers={"content-type": "application/json"},
                      timeout=60)


def test_engine_batches_prompts_of_different_lengths_exactly_as_one_at_a_time(checkpoint):
    engine = Engine(checkpoint)
    jobs = [Generation(engine.encode(p), 6, temperature=0) for p in ["床前明月", "def", "房间很干净，服务"]]

    def run(batch):
        tokens = [[] for _ in batch]
        engine.generate(batch, lambda row, token, finish: token is not None and tokens[row].append(token))
        return tokens

    alone = [run([job])[0] for job in jobs]
    assert run(jobs) == alone
    ours = tiny_lm(vocab_size=300).eval()
    for job, answer in zip(jobs, alone):  # and as our own DeepSeekLM decodes greedily
        assert ours.generate(torch.tensor([job.prompt_ids]), len(answer))[0, len(job.prompt_ids):].tolist() == answer


def test_openai_client_lists_completes_and_chats(server):
    client = OpenAI(base_url=server.base_url + "/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == ["tiny"]
    done = client.completions.create(model="tiny", prompt="床前", max_tokens=5, temperature=0)
    assert done.choices[0].finish_reason in ("length", "stop") and done.usage.prompt_tokens > 0
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "你好"}],
                                          max_tokens=5, temperature=0)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens <= 5
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "你好"}], max_tokens=5,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens


def test_chat_stream_honours_the_sse_contract(server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "temperature": 0.7,
            "seed": 3, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "chat.completion.chunk" for c in chunks)
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] in ("length", "stop")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] <= 4
    assert chunks.index(finish[0]) == len(chunks) - 2  # finish, then usage, then [DONE]


@pytest.mark.parametrize("body, status, names", [
    ("{not json", 400, "malformed JSON"),
    ({"model": "gpt-4", "prompt": "床前"}, 404, "'gpt-4'"),
    ({"model": "tiny", "prompt": "床前", "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny", "prompt": "床前", "max_tokens": -3}, 400, "max_tokens"),
    ({"model": "tiny", "prompt": "床前", "max_tokens": 10**6}, 400, "max_tokens=1000000 is too large"),
    ({"model": "tiny", "prompt": "床前" * 400, "max_tokens": 4}, 400, "context"),
    ({"model": "tiny", "prompt": "床前", "max_tokens": "5"}, 400, "max_tokens"),
    ({"model": "tiny", "prompt": 42}, 400, "prompt"),
    ({"model": "tiny", "prompt": "床前", "temperature": 3}, 400, "temperature"),
    ({"model": "tiny", "prompt": "床前", "temperature": "0.5"}, 400, "temperature"),
    ({"model": "tiny", "prompt": "床前", "stream": "yes"}, 400, "stream"),
    ({"model": "tiny"}, 400, "prompt"),
])
def test_bad_requests_get_their_4xx_with_a_clear_json_error(server, body, status, names):
    response = post(server, "/v1/completions", body)
    assert response.status_code == status
    error = response.json()["error"]
    assert names in error["message"] and error["type"] == "invalid_request_error"


def test_bad_chat_messages_are_rejected(server):
    response = post(server, "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]})
    assert response.status_code == 400 and "messages.0.role" in response.json()["error"]["message"]
    assert post(server, "/v1/chat/completions", {"model": "tiny", "messages": []}).status_code == 400


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_body_is_refused_at_once_while_the_server_keeps_answering(server, chunked):
    body = json.dumps({"model": "tiny", "prompt": "ab" * 10_000_000}).encode()  # 20 MB

    async def pieces():  # no Content-Length: the server can only count as the body arrives
        for start in range(0, len(body), 1 << 20):
            yield body[start:start + (1 << 20)]

    async def upload_and_check_health():
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            began = time.perf_counter()
            upload = asyncio.create_task(client.post("/v1/completions", content=pieces() if chunked else body,
                                                     headers={"content-type": "application/json"}))
            await asyncio.sleep(0.2)
            asked = time.perf_counter()
            health = await client.get("/health")
            health_s = time.perf_counter() - asked
            refused = await upload
            return refused, time.perf_counter() - began, health, health_s

    refused, refused_s, health, health_s = asyncio.run(upload_and_check_health())
    assert refused.status_code == 413 and refused_s < 5
    error = refused.json()["error"]
    assert "bytes" in error["message"] and error["code"] == "request_too_large"
    assert health.status_code == 200 and health_s < 1


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer(server, checkpoint):
    async def together():
        async with httpx.AsyncClient(timeout=60) as client:
            bodies = [{"model": "tiny", "prompt": p, "max_tokens": 6, "temperature": 0} for p in PROMPTS]
            return await asyncio.gather(*(client.post(server.base_url + "/v1/completions", json=b) for b in bodies))

    before = metric(server, "dstutor_batches_total")
    replies = asyncio.run(together())
    batches = metric(server, "dstutor_batches_total") - before
    assert all(r.status_code == 200 and r.headers["x-cache"] == "miss" for r in replies)
    assert batches < len(PROMPTS), f"{len(PROMPTS)} concurrent requests ran in {batches} batches: no batching"
    engine = Engine(checkpoint)  # the same model, one request at a time, in this process
    for prompt, reply in zip(PROMPTS, replies):
        tokens = []
        engine.generate([Generation(engine.encode(prompt), 6, temperature=0)],
                        lambda row, token, finish: token is not None and tokens.append(token))
        assert reply.json()["choices"][0]["text"] == engine.tokenizer.decode(tokens)


def metric(server, name: str) -> float:
    text = httpx.get(server.base_url + "/metrics").text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name)))


def test_lru_cache_answers_a_repeated_greedy_request_and_health_reports(server):
    body = {"model": "tiny", "prompt": "明月光", "max_tokens": 5, "temperature": 0}
    first, second = post(server, "/v1/completions", body), post(server, "/v1/completions", body)
    assert first.headers["x-cache"] == "miss" and second.headers["x-cache"] == "hit"
    assert first.json()["choices"] == second.json()["choices"]
    assert httpx.get(server.base_url + "/health").json()["status"] == "ok"
    cache = LRUCache(capacity=2)
    for key in "abc":
        cache.set(key, {"text": key})
    assert cache.get("a") is None and cache.get("c") == {"text": "c"} and len(cache) == 2


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed (make test installs it)")
def test_redis_cache_is_shared_by_two_servers_on_a_real_redis_server(checkpoint):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "床前"}], "max_tokens": 5, "temperature": 0}
    with RedisProcess() as store:
        with ServerProcess(checkpoint, redis_url=store.url) as first:
            miss = post(first, "/v1/chat/completions", body)
        assert redis.Redis.from_url(store.url).dbsize() == 1
        with ServerProcess(checkpoint, redis_url=store.url) as second:
            hit = post(second, "/v1/chat/completions", body)
            assert 'dstutor_cache_hits_total{kind="redis"} 1' in httpx.get(second.base_url + "/metrics").text
    assert miss.headers["x-cache"] == "miss" and hit.headers["x-cache"] == "hit"
    assert hit.json()["choices"] == miss.json()["choices"]


def test_the_dstutor_command_lists_serve_and_rejects_unknown_commands(capsys):
    assert cli(["--help"]) == 0 and "serve" in capsys.readouterr().out
    assert cli(["deploy"]) == 2 and "unknown command 'deploy'" in capsys.readouterr().err


def test_python_m_dstutor_is_the_command_and_its_help_loads_no_torch():
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-X", "importtime", "-m", "dstutor", "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "pretrain" in shown.stdout and "serve" in shown.stdout
    assert " torch" not in shown.stderr  # -X importtime lists every module imported, one per line


def test_serve_says_what_is_wrong_with_a_missing_model_or_redis(tmp_path, checkpoint, capsys):
    assert cli(["serve", "--model", str(tmp_path / "nowhere")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    assert cli(["serve", "--model", str(checkpoint), "--redis-url", nobody]) == 2
    assert "error:" in capsys.readouterr().err


def test_load_test_loses_nothing_and_reports_latency(server):
    before = scrape_counters(server.base_url)
    records = run_load(server.base_url, "tiny", PROMPTS, concurrency=4, duration_s=2, max_tokens=4)
    after = scrape_counters(server.base_url)
    summary = summarize(records, 2)
    batched, batches = (after[k] - before[k] for k in ("dstutor_batched_requests_total", "dstutor_batches_total"))
    assert batched == summary["answered"] and 1 <= batches <= batched  # every sampled request decoded in a batch
    assert summary["lost"] == 0 and summary["http_5xx"] == 0 and summary["answered"] == len(records) >= 4
    assert 0 < summary["p50_ttft_s"] <= summary["p50_latency_s"] <= summary["p99_latency_s"]
