"""fastml's BPE on SmolLM2's vocabulary against Hugging Face tokenizers and transformers."""

import pytest

from fastml.backends import available_backends
from fastml.bpe import Tokenizer
from fastml.llm import GGUFFile, chat_prompt

from .conftest import GGUF_PATH

BPE_BACKENDS = available_backends("bpe")

TEXTS = [
    "The capital of France is Paris.",
    "In 2024, the  123 cats' owners paid $4,567.89 (about 3.5 times more).",
    "Tabs\tand\r\nnewlines\n\n\n   indented  lines   \n",
    "Unicode: naïve café, Größe, 東京タワー, emoji 🙂👍🏽, Ⅻ and ² and ٣.",
    "It's, they're, we've, I'll, you'd, I'm -- 'quoted' and ''doubled''",
    "def f(x):\n    return x**2  # comment\n",
    "    ",
]


@pytest.fixture(scope="module")
def kjv_lines():
    from fastml.bpe._corpus import load_kjv

    try:
        text = load_kjv()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    return text.splitlines()[:2000]


@pytest.fixture(scope="module", params=BPE_BACKENDS)
def tokenizer(request):
    return GGUFFile(GGUF_PATH).tokenizer(backend=request.param)


@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_hf_tokenizers(tokenizer, reference_tokenizer, text):
    assert tokenizer.encode(text) == reference_tokenizer.encode(text).ids


def test_ids_match_hf_tokenizers_on_the_kjv(tokenizer, reference_tokenizer, kjv_lines):
    # Verse numbers are put back in front of each line, so that digits are exercised too.
    texts = [f"{number} {line}" for number, line in enumerate(kjv_lines, start=1)]
    ours = tokenizer.encode_batch(texts)
    theirs = [encoding.ids for encoding in reference_tokenizer.encode_batch(texts)]
    assert ours == theirs


def test_ids_match_transformers_on_text_without_digits(tokenizer, transformers_tokenizer, kjv_lines):
    """transformers' GGUF converter drops SmolLM2's digit split, so it is compared without digits."""
    texts = kjv_lines[:500] + [text for text in TEXTS if not any(c.isdigit() for c in text)]
    for text in texts:
        assert tokenizer.encode(text) == transformers_tokenizer(text)["input_ids"], text


def test_special_tokens_and_chat_template(tokenizer, transformers_tokenizer):
    messages = [{"role": "user", "content": "What is 2+2?"}]
    text = chat_prompt(messages)
    expected = transformers_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert text == expected

    ids = tokenizer.encode(text, allowed_special="all")
    assert ids[0] == 1  # <|im_start|>
    assert ids.count(2) == 2  # <|im_end|> closes the system and the user turn
    assert tokenizer.decode(ids) == text


@pytest.mark.parametrize(
    "messages, error, message",
    [
        ("Hi", TypeError, "messages must be a list of dicts"),
        ([["user", "Hi"]], TypeError, "messages must be a list of dicts"),
        ([{"role": "robot", "content": "Hi"}], ValueError, r"messages\[0\] must be a dict with role"),
        ([{"role": "user", "content": 3}], ValueError, "str content"),
    ],
)
def test_chat_prompt_rejects_bad_messages(messages, error, message):
    with pytest.raises(error, match=message):
        chat_prompt(messages)


@pytest.mark.parametrize("text", TEXTS)
def test_decode_round_trips(tokenizer, reference_tokenizer, text):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert reference_tokenizer.decode(ids) == text


def test_tokenizer_survives_a_save_and_load(tmp_path):
    tokenizer = GGUFFile(GGUF_PATH).tokenizer()
    tokenizer.save(tmp_path / "smollm2.tiktoken")
    loaded = Tokenizer.load(tmp_path / "smollm2.tiktoken")
    assert loaded.encode(TEXTS[1]) == tokenizer.encode(TEXTS[1])


def test_bytes_outside_the_vocabulary_are_refused(generator):
    # 0x04 is a valid UTF-8 control character that SmolLM2's vocabulary has no token for.
    with pytest.raises(ValueError, match=r"byte 0x04 .*cannot represent"):
        generator.encode("end of transmission \x04 here")
