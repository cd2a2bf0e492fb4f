"""The model server behind one endpoint: `python -m vertex_standin.serving --model-uri gs://... ...`.

Loads a deployed checkpoint (a Hugging Face folder; LoRA checkpoints are written merged) and
answers on 127.0.0.1 at an ephemeral port, which it announces in the ready file once loaded. The
stand-in forwards `:predict`, `:generateContent` and `chat/completions` here, so loading and
generating never block the API server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class BadRequestError(ValueError):
    pass


@dataclass(frozen=True)
class SamplingOptions:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k cut

    @classmethod
    def from_values(cls, max_tokens: Any, temperature: Any, top_p: Any, top_k: Any) -> SamplingOptions:
        # Predict instances travel as protobuf Values, so integers arrive as floats (200 -> 200.0).
        try:
            options = cls(
                max_tokens=int(float(max_tokens)) if max_tokens is not None else cls.max_tokens,
                temperature=float(temperature) if temperature is not None else cls.temperature,
                top_p=float(top_p) if top_p is not None else cls.top_p,
                top_k=max(0, int(float(top_k))) if top_k is not None else cls.top_k,
            )
        except (TypeError, ValueError) as error:
            raise BadRequestError(f"invalid sampling parameter: {error}") from error
        if options.max_tokens < 1:
            raise BadRequestError("max_tokens must be at least 1")
        return options


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finished: bool  # the model ended the answer itself (end-of-sequence), not the token limit


class LoadedModel:
    def __init__(self, folder: Path, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(max(1, threads))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        loaded: Any = AutoModelForCausalLM.from_pretrained(str(folder))
        self.model = loaded.to(self.device).eval()
        self._lock = threading.Lock()  # one generation at a time: the model is not thread-safe

    def complete(self, prompt: str, options: SamplingOptions) -> Generation:
        ids = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return self._generate(ids, options)

    def chat(self, messages: list[dict[str, str]], options: SamplingOptions) -> Generation:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.complete(str(text), options)

    def _generate(self, ids: list[int], options: SamplingOptions) -> Generation:
        import torch

        if not ids:
            raise BadRequestError("the prompt is empty")
        sampling = options.temperature > 0
        settings: dict[str, Any] = {
            "max_new_tokens": options.max_tokens,
            "do_sample": sampling,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
        }
        if sampling:
            settings.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k)
        with self._lock, torch.no_grad():
            inputs = torch.tensor([ids], device=self.device)
            output = self.model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), **settings)
        new = output[0, len(ids) :].tolist()
        finished = bool(new) and new[-1] == self.tokenizer.eos_token_id
        text = str(self.tokenizer.decode(new, skip_special_tokens=True))
        return Generation(text, len(ids), len(new), finished)


def answer_predict(model: LoadedModel, body: dict[str, Any]) -> dict[str, Any]:
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise BadRequestError("instances must be a non-empty list")
    predictions = []
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict) or not isinstance(instance.get("prompt"), str):
            raise BadRequestError(f"instances[{index}].prompt must be a string")
        options = SamplingOptions.from_values(
            instance.get("max_tokens"),
            instance.get("temperature"),
            instance.get("top_p"),
            instance.get("top_k"),
        )
        generation = model.complete(instance["prompt"], options)
        # Model Garden's vLLM container echoes the prompt unless raw_response is set.
        raw = bool(instance.get("raw_response", False))
        predictions.append(
            generation.text if raw else f"Prompt:\n{instance['prompt']}\nOutput:\n{generation.text}"
        )
    return {"predictions": predictions}


def answer_generate_content(model: LoadedModel, body: dict[str, Any]) -> dict[str, Any]:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequestError("contents must be a non-empty list")
    messages: list[dict[str, str]] = []
    system = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(system, dict):
        messages.append({"role": "system", "content": _parts_text(system)})
    for content in contents:
        role = "assistant" if content.get("role") == "model" else "user"
        messages.append({"role": role, "content": _parts_text(content)})
    config = body.get("generationConfig") or {}
    options = SamplingOptions.from_values(
        config.get("maxOutputTokens", 64), config.get("temperature"), config.get("topP"), config.get("topK")
    )
    generation = model.chat(messages, options)
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": generation.text}]},
                "finishReason": "STOP" if generation.finished else "MAX_TOKENS",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": generation.prompt_tokens,
            "candidatesTokenCount": generation.completion_tokens,
            "totalTokenCount": generation.prompt_tokens + generation.completion_tokens,
        },
        "modelVersion": "1",
        "createTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "responseId": uuid.uuid4().hex,
    }


def _parts_text(content: dict[str, Any]) -> str:
    return "".join(str(p.get("text", "")) for p in content.get("parts", []) if isinstance(p, dict))


def answer_chat_completions(model: LoadedModel, body: dict[str, Any]) -> dict[str, Any]:
    if body.get("stream"):
        raise BadRequestError("stream: streaming is not supported by the stand-in")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("messages must be a non-empty list")
    turns = []
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise BadRequestError(f"messages[{index}].content must be text")
        turns.append({"role": str(message.get("role", "user")), "content": content})
    options = SamplingOptions.from_values(
        body.get("max_completion_tokens", body.get("max_tokens", 64)),
        body.get("temperature"),
        body.get("top_p"),
        body.get("top_k"),
    )
    generation = model.chat(turns, options)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model", "")),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": generation.text},
                "finish_reason": "stop" if generation.finished else "length",
            }
        ],
        "usage": {
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens,
        },
    }


ROUTES = {
    "predict": answer_predict,
    "generateContent": answer_generate_content,
    "chat/completions": answer_chat_completions,
}


def serve(model: LoadedModel) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            route = ROUTES.get(self.path.strip("/"))
            try:
                if route is None:
                    raise BadRequestError(f"unknown route {self.path}")
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                status, answer = HTTPStatus.OK, route(model, body)
            except (BadRequestError, json.JSONDecodeError, AttributeError) as error:
                status, answer = HTTPStatus.BAD_REQUEST, {"error": {"rpcCode": 3, "message": str(error)}}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


def _write_ready(path: Path, document: dict[str, Any]) -> None:
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(document))
    scratch.replace(path)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="vertex_standin.serving")
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--project", default="")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from google.api_core.exceptions import GoogleAPIError

    from vertex_standin.artifacts import DatasetUnreadableError, download_folder

    try:
        folder = Path(args.model_uri)
        if args.model_uri.startswith("gs://"):
            folder = download_folder(args.model_uri, args.work_dir / "model", args.project)
        if not (folder / "config.json").exists():
            raise DatasetUnreadableError(
                f"{args.model_uri} is not a Hugging Face model folder (no config.json)"
            )
        model = LoadedModel(folder, args.threads)
    except (DatasetUnreadableError, GoogleAPIError, ValueError, OSError) as error:
        _write_ready(
            args.ready_file, {"error": f"Model {args.model_uri} could not be loaded: {error}", "code": 3}
        )
        return 1
    server = serve(model)
    _write_ready(args.ready_file, {"port": server.server_address[1], "pid": os.getpid()})
    print(
        json.dumps(
            {
                "severity": "INFO",
                "message": "model server ready",
                "model": args.model_uri,
                "port": server.server_address[1],
            }
        ),
        flush=True,
    )
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
