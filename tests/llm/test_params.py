"""Parameter validation (once, in llm.types) and mapping per provider and dialect."""

import pytest

from llm.providers import ollama, openai_compat
from llm.types import ChatRequest, GenerationParams, InvalidParams

ALL = GenerationParams(temperature=0.3, top_p=0.85, top_k=20, max_tokens=64, presence_penalty=0.1,
                       frequency_penalty=0.2, repeat_penalty=1.1, seed=7, stop=["\n\n"], num_ctx=4096)


@pytest.mark.parametrize("field,value,message", [
    ("temperature", 2.5, "between 0 and 2"),
    ("top_p", -0.1, "between 0 and 1"),
    ("top_k", 0, "between 1 and 1000"),
    ("top_k", 2.5, "whole number"),
    ("max_tokens", 0, "between 1"),
    ("presence_penalty", 3, "between -2 and 2"),
    ("seed", -1, "between 0"),
    ("stop", ["a", "b", "c", "d", "e"], "at most 4"),
    ("stop", [""], "non-empty"),
    ("temperature", "hot", "must be a number"),
    ("temperature", True, "must be a number"),
])
def test_out_of_range_parameters_are_rejected_with_the_field(field, value, message):
    params = GenerationParams(**{field: value})
    with pytest.raises(InvalidParams) as caught:
        params.validate()
    assert message in caught.value.fields[field]
    assert caught.value.status == 400


def test_valid_parameters_pass_and_unset_ones_are_not_sent():
    ALL.validate()
    assert GenerationParams(temperature=0).set_params() == {"temperature": 0}


def test_request_needs_messages_with_known_roles():
    with pytest.raises(InvalidParams) as caught:
        ChatRequest(messages=[{"role": "robot", "content": "x"}]).validate()
    assert "messages" in caught.value.fields
    with pytest.raises(InvalidParams):
        ChatRequest(messages=[]).validate()


def test_ollama_takes_every_parameter_as_an_option():
    options, ignored = ollama.map_params(ALL)
    assert ignored == []
    assert options == {"temperature": 0.3, "top_p": 0.85, "top_k": 20, "num_predict": 64, "presence_penalty": 0.1,
                       "frequency_penalty": 0.2, "repeat_penalty": 1.1, "seed": 7, "stop": ["\n\n"], "num_ctx": 4096}


def test_ollama_body_carries_schema_and_keep_alive():
    body, _ = ollama.chat_body("m", ChatRequest(messages=[{"role": "user", "content": "x"}],
                                                json_schema={"type": "object"}, keep_alive="10m"))
    assert body["format"] == {"type": "object"} and body["keep_alive"] == "10m" and body["stream"] is True


def test_openai_reports_what_it_cannot_take():
    kwargs, extra, ignored = openai_compat.map_params(ALL, dialect="openai", model="gpt-4o-mini")
    assert ignored == ["num_ctx", "repeat_penalty", "top_k"]
    assert extra == {}
    assert kwargs["max_completion_tokens"] == 64 and "max_tokens" not in kwargs
    assert kwargs["temperature"] == 0.3 and kwargs["seed"] == 7 and kwargs["stop"] == ["\n\n"]


def test_openai_reasoning_models_take_no_sampling_parameters():
    _kwargs, _extra, ignored = openai_compat.map_params(ALL, dialect="openai", model="gpt-5-mini")
    assert {"temperature", "top_p", "presence_penalty", "frequency_penalty"} <= set(ignored)
    kwargs, _extra, _ignored = openai_compat.map_params(ALL, dialect="openai", model="gpt-5-chat-latest")
    assert kwargs["temperature"] == 0.3


def test_llamacpp_dialect_passes_top_k_and_repeat_penalty_as_extra_body():
    kwargs, extra, ignored = openai_compat.map_params(ALL, dialect="llamacpp", model="smollm2")
    assert extra == {"top_k": 20, "repeat_penalty": 1.1}
    assert ignored == ["num_ctx"]
    assert kwargs["max_tokens"] == 64


def test_generic_dialect_uses_max_tokens_and_standard_parameters_only():
    kwargs, extra, ignored = openai_compat.map_params(ALL, dialect="generic", model="llama3")
    assert kwargs["max_tokens"] == 64 and extra == {} and "top_k" in ignored


def test_json_schema_mapping_per_dialect():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    assert openai_compat.response_format(schema, dialect="llamacpp") == {"type": "json_object", "schema": schema}
    openai_format = openai_compat.response_format(schema, dialect="openai")
    assert openai_format["type"] == "json_schema"
    assert openai_format["json_schema"]["schema"] == schema and openai_format["json_schema"]["strict"] is True


def test_ollama_model_names_are_normalised():
    assert ollama.normalize_model("llama3.2") == "llama3.2:latest"
    assert ollama.normalize_model("llama3.2:1b") == "llama3.2:1b"
    assert ollama.normalize_model("hf.co/org/model") == "hf.co/org/model:latest"
