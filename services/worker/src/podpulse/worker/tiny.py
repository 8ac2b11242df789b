"""A tiny Qwen2-architecture model with a real tokenizer and chat template, built offline.

It stands in for the 7B career model on CPUs (the twin, the demo, the tests). Its weights
are random, so its text is gibberish; everything around them is real: a byte-level BPE
tokenizer trained here, Qwen2's ChatML template, and a folder loaded back through the same
``AutoModelForCausalLM.from_pretrained`` path as the production model.

Run ``python -m podpulse.worker.tiny [CACHE_DIR]`` to build it and print its folder.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["CHATML_TEMPLATE", "TINY_MODEL_NAME", "ensure_tiny_model"]

# Bump when anything below changes what is written: an old folder is then simply not reused.
TINY_MODEL_NAME = "tiny-qwen2-career-v1"
_COMPLETE_MARKER = ".complete"

# Qwen2-Instruct's template, kept verbatim so the tiny model renders prompts the way the
# fine-tuned 7B does.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_VOCAB_SIZE = 1024

_CORPUS = """\
You are a career guidance assistant. Give practical, specific and honest advice.
I have five years of experience as a data analyst and want to move into machine learning.
Which skills should I learn first, and how long will the transition take?
Start with Python, statistics and linear algebra, then build two or three small projects.
A portfolio matters more than certificates. Apply for internal transfers before external roles.
My background is in nursing and I want to become a software engineer in Berlin.
Many employers value domain knowledge; health-tech companies hire engineers who understand care.
Consider a part-time bootcamp, contribute to open source, and practise interview questions.
Skills: SQL, Excel, Tableau, communication, project management, stakeholder management.
Goals: a senior role within three years, remote work, a better salary, leadership experience.
Location: London, New York, Bangalore, Toronto, Sydney, Lagos, São Paulo, remote.
Write a short CV summary, tailor each application, and prepare stories using the STAR method.
Negotiate the offer: research market rates, state a range, and ask about growth and training.
If you feel stuck, talk to a mentor, set weekly goals, and review your progress every month.
Product management, data engineering, UX research and cloud architecture are growing fields.
Networking works best when you offer help first; follow up within a week after each meeting.
"""


def ensure_tiny_model(cache_dir: Path | str) -> Path:
    """Return the tiny model's folder under ``cache_dir``, building it once if absent.

    Idempotent and cheap when cached. Two processes may race: each builds in its own
    temporary folder and renames it into place; the loser discards its copy.
    """
    cache = Path(cache_dir).expanduser()
    final = cache / TINY_MODEL_NAME
    if (final / _COMPLETE_MARKER).is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{TINY_MODEL_NAME}-", dir=cache))
    try:
        _build(staging)
        (staging / _COMPLETE_MARKER).write_text("ok\n", encoding="utf-8")
        if final.exists() and not (final / _COMPLETE_MARKER).is_file():
            # A folder left by an interrupted build of an older release: replace it.
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(staging, final)
        except OSError:
            # Another process renamed its build into place first; theirs is as good as ours.
            if not (final / _COMPLETE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _build(folder: Path) -> None:
    # Imported here: building is rare, and these imports cost seconds.
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf: Any = transformers  # its stubs leave the constructors used here untyped

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    tokenizer = hf.PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",  # noqa: S106 - a special token's name, not a password
        pad_token="<|endoftext|>",  # noqa: S106
        additional_special_tokens=["<|im_start|>"],
        model_max_length=2048,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")

    config = hf.Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        # Wider than Qwen2's 0.02 so that logits are well separated: greedy decoding then
        # does not hinge on float rounding, and batched-vs-alone comparisons are meaningful.
        initializer_range=0.2,
        tie_word_embeddings=True,
        bos_token_id=endoftext,
        eos_token_id=im_end,
        pad_token_id=endoftext,
    )
    # A private RNG stream: the weights are the same on every build, and a caller's own
    # seeded draws are left undisturbed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = hf.Qwen2ForCausalLM(config)
    model.generation_config = hf.GenerationConfig(
        bos_token_id=endoftext,
        eos_token_id=[im_end, endoftext],
        pad_token_id=endoftext,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


if __name__ == "__main__":
    target = ensure_tiny_model(
        sys.argv[1] if len(sys.argv) > 1 else Path.home() / ".cache/podpulse"
    )
    sys.stdout.write(f"{target}\n")
