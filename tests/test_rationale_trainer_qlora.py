"""QLoRA: the LoRA gradients of a 4-bit (nf4, double quantization) tiny Llama inside RationaleSFTTrainer, taken after
an eval-mode forward (label scoring), equal those of the same model with the dequantized fp32 weights and the same
LoRA weights, and that the trainer applied the avx512_bf16 work-around (on CPUs with avx512_bf16 an eval forward
repacks the 4-bit weights without it; the CPU this was written on has none, so the failure itself was not seen here)."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig
from rationale_fixtures import rationale_dataset, tiny_llama, tiny_tokenizer
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from distil_trainers.trainers.rationale import RationaleSFTConfig, RationaleSFTTrainer

try:
    import bitsandbytes as bnb
except Exception as error:  # noqa: BLE001
    pytest.skip(f"bitsandbytes cannot be imported ({error}); pip install bitsandbytes", allow_module_level=True)


def _lora() -> LoraConfig:
    # init_lora_weights=False: B is random too, so both A and B get non-zero gradients
    return LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )


def _args(tmp_path, name):
    return RationaleSFTConfig(
        output_dir=str(tmp_path / name),
        report_to="none",
        use_cpu=True,
        bf16=False,
        max_length=256,
        per_device_train_batch_size=4,
        save_strategy="no",
        disable_tqdm=True,
        gradient_checkpointing=False,
    )


def test_qlora_lora_gradients_match_dequantized_reference(tmp_path):
    tok = tiny_tokenizer()
    tiny_llama(tok, seed=0).save_pretrained(tmp_path / "base")
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    quantized = AutoModelForCausalLM.from_pretrained(
        tmp_path / "base", quantization_config=quantization, dtype=torch.float32
    )
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
    n4 = 0
    for name, module in quantized.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
            reference.get_submodule(name).weight.data.copy_(weight)
            n4 += 1
    assert n4 == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers

    ds = rationale_dataset()
    q_trainer = RationaleSFTTrainer(
        quantized, args=_args(tmp_path, "q"), train_dataset=ds, processing_class=tok, peft_config=_lora()
    )
    r_trainer = RationaleSFTTrainer(
        reference, args=_args(tmp_path, "r"), train_dataset=ds, processing_class=tok, peft_config=_lora()
    )
    linear4 = [m for m in q_trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linear4 and all(m.support_avx512bf16_for_cpu is False for m in linear4)
    q_lora = {n: p for n, p in q_trainer.model.named_parameters() if p.requires_grad}
    r_lora = {n: p for n, p in r_trainer.model.named_parameters() if p.requires_grad}
    assert q_lora.keys() == r_lora.keys() and len(q_lora) == 2 * 3 * 2
    assert all(p.dtype == torch.float32 for p in q_lora.values())  # not TRL's bfloat16 cast, on CPU
    with torch.no_grad():
        for name, param in r_lora.items():
            param.copy_(q_lora[name])

    # an eval-mode, no-grad forward first: the one that repacks the 4-bit weights on avx512_bf16 CPUs
    q_trainer.predict_labels(["good morning all"], show_progress=False)

    batch = q_trainer.data_collator([q_trainer.train_dataset[i] for i in range(4)])
    for trainer in (q_trainer, r_trainer):
        trainer.model.train()
        trainer.compute_loss(trainer.model, {k: v.clone() for k, v in batch.items()}).backward()
    for name in q_lora:
        assert q_lora[name].grad is not None, name
        assert q_lora[name].grad.abs().max() > 0, name
        torch.testing.assert_close(q_lora[name].grad, r_lora[name].grad, rtol=1e-3, atol=1e-5, msg=name)
