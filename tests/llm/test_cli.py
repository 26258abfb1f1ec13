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
    assert "4 new tokens" in captured.err
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
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--top-p", "1.5"], "top_p"),
        (["--max-new-tokens", "-3"], "max_new_tokens must be >= 0"),
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


def test_python_dash_m_fastml_generate_streams_text():
    result = subprocess.run(
        [sys.executable, "-m", "fastml", "generate", "The capital of France is",
         "--max-new-tokens", "2", "--temperature", "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("The capital of France is Paris")
