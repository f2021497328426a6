#!/usr/bin/env python3
"""template_cases.py -- write tests/data/template_cases.jsonl: conversations
rendered by Jinja2 the way transformers' apply_chat_template renders them,
the reference the C Jinja engine is tested against (byte for byte).

    python3 tools/template_cases.py [../shared/models] > tests/data/template_cases.jsonl

Needs python3-jinja2 (only to regenerate; the tests read the output). The
templates are the tokenizer.chat_template of ../shared's tiny files
(llama, qwen3, smollm3) and tests/data/templates/*.jinja (qwen2.5). The
clock is pinned: strftime_now formats 2026-11-26 09:30, and each case
records it as "now" so the engine can be given the same time.
"""
import datetime
import json
import os
import struct
import sys

import jinja2
import jinja2.ext
import jinja2.sandbox

NOW = datetime.datetime(2026, 11, 26, 9, 30, 0)


def gguf_template(path):
    """tokenizer.chat_template and the bos/eos token texts of a GGUF file."""
    with open(path, "rb") as f:
        data = f.read(64 << 20)
    if data[:4] != b"GGUF":
        raise ValueError(path + ": not GGUF")
    _, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    off = 24

    def rd_str(o):
        (n,) = struct.unpack_from("<Q", data, o)
        return data[o + 8 : o + 8 + n].decode("utf-8"), o + 8 + n

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    fmt = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def rd_val(t, o):
        if t == 8:
            return rd_str(o)
        if t == 9:
            at, n = struct.unpack_from("<IQ", data, o)
            o += 12
            out = []
            for _ in range(n):
                v, o = rd_val(at, o)
                out.append(v)
            return out, o
        return struct.unpack_from("<" + fmt[t], data, o)[0], o + sizes[t]

    kv = {}
    for _ in range(n_kv):
        k, off = rd_str(off)
        (t,) = struct.unpack_from("<I", data, off)
        off += 4
        v, off = rd_val(t, off)
        if k.startswith("tokenizer.ggml.tokens") or k.startswith("tokenizer.chat") or k.endswith("token_id"):
            kv[k] = v
    toks = kv.get("tokenizer.ggml.tokens", [])
    tok = lambda k: toks[kv[k]] if k in kv and kv[k] < len(toks) else ""
    return kv["tokenizer.chat_template"], tok("tokenizer.ggml.bos_token_id"), tok("tokenizer.ggml.eos_token_id")


def env():
    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    e = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    e.filters["tojson"] = tojson
    e.globals["raise_exception"] = raise_exception
    e.globals["strftime_now"] = lambda fmt: NOW.strftime(fmt)
    return e


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city, in °C",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "e.g. \"Zürich\""},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "detail": {"type": "boolean"},
            },
            "required": ["city"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {"name": "search", "description": "Search the web", "parameters": {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "number", "default": 3.5}}}},
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": 2}}}

CASES = [
    ("user", dict(messages=[{"role": "user", "content": "Hello!"}], add_generation_prompt=True)),
    ("user_no_prompt", dict(messages=[{"role": "user", "content": "Hello!"}], add_generation_prompt=False)),
    ("system_multi", dict(messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}], add_generation_prompt=True)),
    ("empty_system", dict(messages=[{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}], add_generation_prompt=True)),
    ("whitespace_and_unicode", dict(messages=[
        {"role": "user", "content": "  padded  \n\nline two\t\n"}, {"role": "assistant", "content": "\n Grüße, 世界 🙂 \n"},
        {"role": "user", "content": "{{ not a template }} {% if %} <|im_end|>"}], add_generation_prompt=True)),
    ("no_thinking", dict(messages=[{"role": "user", "content": "Why is the sky blue?"}], add_generation_prompt=True, enable_thinking=False)),
    ("history_with_think", dict(messages=[
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nsimple sum\n</think>\n\n4"},
        {"role": "user", "content": "and 3+3?"}], add_generation_prompt=True)),
    ("reasoning_content_last", dict(messages=[
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "add them"}], add_generation_prompt=False)),
    ("tools", dict(messages=[
        {"role": "system", "content": "You route requests."}, {"role": "user", "content": "Weather in Zürich?"}],
        tools=[WEATHER, SEARCH], add_generation_prompt=True)),
    ("tools_no_system", dict(messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER], add_generation_prompt=True)),
    ("tool_round_trip", dict(messages=[
        {"role": "user", "content": "Weather in Zürich for 2 days?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
        {"role": "tool", "content": "second result"},
        {"role": "assistant", "content": "It is 21 °C and clear."},
        {"role": "user", "content": "Thanks"}], tools=[WEATHER], add_generation_prompt=True)),
    ("tool_call_with_text", dict(messages=[
        {"role": "user", "content": "Look it up"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [CALL, {"type": "function", "function": {"name": "search", "arguments": {"q": "a \"quoted\" term", "n": 2}}}]},
        {"role": "tool", "content": "ok"}], tools=[WEATHER, SEARCH], add_generation_prompt=True)),
    ("long_history", dict(messages=[m for i in range(6) for m in (
        {"role": "user", "content": "question %d" % i}, {"role": "assistant", "content": "answer %d" % i})] +
        [{"role": "user", "content": "last"}], add_generation_prompt=True)),
    ("no_user_message", dict(messages=[{"role": "system", "content": "only a system"}], add_generation_prompt=True)),
]


def main():
    shared = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "models")
    here = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "templates")
    sources = [("llama", "file:llama-tiny.gguf"), ("qwen3", "file:qwen3-tiny.gguf"), ("smollm3", "file:smollm3-tiny-q4_k_m.gguf"),
               ("qwen2.5", "data:qwen2.5.jinja")]
    e = env()
    for fam, src in sources:
        kind, name = src.split(":", 1)
        if kind == "file":
            text, bos, eos = gguf_template(os.path.join(shared, name))
        else:
            text, bos, eos = open(os.path.join(here, name), encoding="utf-8").read(), "", "<|im_end|>"
        tpl = e.from_string(text)
        for cname, ctx in CASES:
            case = {"template": src, "name": cname}
            case.update(ctx)
            case["bos_token"], case["eos_token"] = bos, eos
            case["now"] = NOW.strftime("%Y-%m-%dT%H:%M:%S")
            # as transformers calls it: tools and documents are None when absent
            full = dict(tools=None, documents=None)
            full.update(ctx)
            try:
                case["expected"] = tpl.render(bos_token=bos, eos_token=eos, **full)
            except jinja2.exceptions.TemplateError as err:
                case["error"] = str(err)
            print(json.dumps(case, ensure_ascii=False))


if __name__ == "__main__":
    main()
