"""``fastml generate`` as a user runs it."""

import subprocess
import sys

import pytest

from fastml.cli import main


def test_generate_prints_the_greedy_continuation(capsys):
    status = main(["generate", "The capital of France is", "--max-new-tokens", "4",
                   "--temperature", "0", "--backend", "numpy"])
    captured = capsys.readouterr()
    assert status == 0
    assert captured.out.startswith("The capital of France is Paris")
    assert "generated: 4 tokens" in captured.err
    assert "backend numpy" in captured.err


def test_generate_chat_answers_without_echoing_the_template(capsys):
    status = main(["generate", "What is the capital of France?", "--chat", "--temperature", "0",
                   "--max-new-tokens", "24"])
    out = capsys.readouterr().out
    assert status == 0
    assert "Paris" in out
    assert "<|im_start|>" not in out
    assert "<|im_end|>" not in out


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--top-p", "1.5"], "--top-p"),
        (["--max-new-tokens", "-3"], "--max-new-tokens must be >= 0"),
        (["--seed", "-1"], "--seed must be a non-negative int"),
        (["--max-new-tokens", "9000"], "context length of 8192"),
        (["--system", "Be brief."], "--system needs --chat"),
        (["--backend", "gpu"], "invalid choice: 'gpu'"),
    ],
)
def test_generate_rejects_bad_arguments(capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "Hello", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_generate_reports_a_missing_model_file(capsys, tmp_path):
    status = main(["generate", "Hello", "--model", str(tmp_path / "missing.gguf")])
    assert status == 1
    assert "no GGUF file" in capsys.readouterr().err


def test_generate_reports_a_file_that_is_not_gguf(capsys, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a model")
    status = main(["generate", "Hello", "--model", str(path)])
    err = capsys.readouterr().err
    assert status == 1
    assert "is not a readable GGUF file" in err
    assert "Traceback" not in err


def test_generate_zero_new_tokens_prints_no_nan(capsys):
    status = main(["generate", "Hello", "--max-new-tokens", "0"])
    err = capsys.readouterr().err
    assert status == 0
    assert "generated: 0 tokens at n/a" in err
    assert "nan" not in err


def test_python_dash_m_fastml_generate_streams_text():
    result = subprocess.run(
        [sys.executable, "-m", "fastml", "generate", "The capital of France is",
         "--max-new-tokens", "2", "--temperature", "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("The capital of France is Paris")
