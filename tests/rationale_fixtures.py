"""Shared by the rationale tests (no tests here): tiny offline models, tokenizers and teacher-annotated datasets."""

from __future__ import annotations

import torch
from datasets import ClassLabel, Dataset, Features, Value
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

CLASS_NAMES = ["hate", "offensive", "neither"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
SPECIALS = ["<pad>", "<unk>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]
WORDS = (
    "classify the following social - media post . answer with label only , one of : explain your reasoning briefly "
    "then give on a last line ' < > ' where is label hate offensive neither [ ] rationale because it contains slur "
    "insult no targets group people word words mild rude friendly greeting you are all this that love morning good "
    "bad stupid idiots awful nice day we they them is a an hello"
).split()


def tiny_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(set(WORDS)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="</s>",
        additional_special_tokens=SPECIALS[3:],
    )
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def seq2seq_tokenizer() -> PreTrainedTokenizerFast:
    """Like T5's: every encoded sequence ends with </s>."""
    tok = tiny_tokenizer(chat=False)
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.eos_token_id)]
    )
    return tok


def tiny_llama(tokenizer, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def tiny_t5(tokenizer, seed: int = 0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5ForConditionalGeneration(config)


POSTS = [
    ("you are all stupid idiots", 1, "it contains an insult .", True),
    ("good morning all", 2, "a friendly greeting , no insult .", True),
    ("they are awful people , hate them", 0, "it targets a group .", True),
    ("nice day", 2, "", False),
    ("this is bad", 2, "mild , no targets .", True),
    ("we love you", 2, "friendly .", True),
    ("stupid word", 1, "rude word .", True),
    ("hello", 2, "greeting .", True),
]


def rationale_dataset(n: int | None = None, posts=POSTS) -> Dataset:
    """A hand-made dataset with the columns of distil_trainers.teachers.rationales.generate_rationales."""
    posts = list(posts)[: n or len(posts)]
    rows = {
        "id": [f"p{i}" for i in range(len(posts))],
        "text": [p[0] for p in posts],
        "label": [p[1] for p in posts],
        "teacher_label": [p[1] if p[3] else -1 for p in posts],
        "rationale": [p[2] for p in posts],
        "teacher_agrees": [p[3] for p in posts],
        "parsed": [p[3] for p in posts],
        "raw_output": [f"{p[2]} Label: {CLASS_NAMES[p[1]]}" for p in posts],
    }
    features = Features(
        {
            "id": Value("string"),
            "text": Value("string"),
            "label": ClassLabel(names=CLASS_NAMES),
            "teacher_label": Value("int64"),
            "rationale": Value("string"),
            "teacher_agrees": Value("bool"),
            "parsed": Value("bool"),
            "raw_output": Value("string"),
        }
    )
    return Dataset.from_dict(rows, features=features)


def sft_args(tmp_path, **kwargs):
    """A small CPU ``RationaleSFTConfig`` writing under ``tmp_path``; ``kwargs`` override the defaults."""
    from distil_trainers import RationaleSFTConfig

    defaults = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        use_cpu=True,
        max_length=256,
        logging_steps=1,
        save_strategy="no",
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        disable_tqdm=True,
        bf16=False,
    )
    defaults.update(kwargs)
    return RationaleSFTConfig(**defaults)
