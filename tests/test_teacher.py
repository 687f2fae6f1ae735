"""Teacher state: EMA math, frozen/live semantics, LoRA effective weights, checkpoint round-trip."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from selfdistill.training.teacher import Teacher

ATOL = 1e-6


def tiny_llama(seed: int = 0, tie: bool = True, **overrides) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
        **overrides,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def lora_student(seed: int = 0, **lora_kwargs):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, **lora_kwargs)
    torch.manual_seed(seed + 1)
    return get_peft_model(tiny_llama(seed, tie=lora_kwargs.get("modules_to_save") is None), config)


def ids_BT(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def perturb(params, scale: float = 0.1, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.add_(scale * torch.randn(p.shape, generator=gen).to(p.dtype))


def clone_state(teacher: Teacher) -> dict[str, torch.Tensor]:
    return {name: t.clone() for name, t in teacher.state_dict().items()}


def lora_q_proj(student):
    """(W0, A, B, scaling) of layer 0's q_proj."""
    layer = student.base_model.model.model.layers[0].self_attn.q_proj
    return (
        layer.base_layer.weight,
        layer.lora_A["default"].weight,
        layer.lora_B["default"].weight,
        layer.scaling["default"],
    )


# --------------------------------------------------------------------------- full fine-tuning


def test_ema_update_is_lerp_for_every_parameter():
    student, a = tiny_llama(), 0.1
    teacher = Teacher(student, "ema", ema_rate=a)
    old = clone_state(teacher)
    perturb(student.parameters())
    teacher.update(student)
    new = dict(student.named_parameters())
    state = teacher.state_dict()
    assert state.keys() == new.keys()
    for name, phi in state.items():
        torch.testing.assert_close(phi, (1 - a) * old[name] + a * new[name], rtol=0, atol=ATOL)
        assert not torch.equal(phi, old[name]), name


def test_ema_matches_closed_form_after_n_updates():
    student, a, n = tiny_llama(), 0.05, 30
    teacher = Teacher(student, "ema", ema_rate=a)
    phi0 = clone_state(teacher)
    perturb(student.parameters(), scale=1.0)
    for _ in range(n):
        teacher.update(student)
    theta = dict(student.named_parameters())
    for name, phi in teacher.state_dict().items():
        expected = theta[name] + (1 - a) ** n * (phi0[name] - theta[name])
        torch.testing.assert_close(phi, expected, rtol=0, atol=1e-5)


def test_copy_is_plain_frozen_eval_and_keeps_tied_embeddings():
    student = tiny_llama()
    student.train()
    teacher = Teacher(student, "ema", ema_rate=0.5)
    shadow = teacher.model
    assert shadow is not student and type(shadow) is LlamaForCausalLM
    assert not shadow.training and not any(p.requires_grad for p in shadow.parameters())
    assert shadow.lm_head.weight is shadow.model.embed_tokens.weight
    perturb(student.parameters())
    teacher.update(student)
    assert shadow.lm_head.weight is shadow.model.embed_tokens.weight
    torch.testing.assert_close(shadow.lm_head.weight, shadow.model.embed_tokens.weight, rtol=0, atol=0)


def test_frozen_never_moves():
    student = tiny_llama()
    teacher = Teacher(student, "frozen")
    before = clone_state(teacher)
    logits_before = teacher.logits(ids_BT())
    perturb(student.parameters())
    teacher.update(student)
    for name, phi in teacher.state_dict().items():
        assert torch.equal(phi, before[name]), name
    assert torch.equal(teacher.logits(ids_BT()), logits_before)
    assert not torch.allclose(student(ids_BT()).logits, logits_before)


def test_live_is_the_student_without_dropout_and_restores_train_mode():
    student = tiny_llama(attention_dropout=0.5)
    teacher = Teacher(student, "live")
    assert teacher.model is student and teacher.state_dict() == {}
    perturb(student.parameters())
    teacher.update(student)  # no-op
    student.train()
    logits = teacher.logits(ids_BT(), attention_mask=torch.ones(2, 7, dtype=torch.long))
    assert student.training and not logits.requires_grad
    student.eval()
    with torch.no_grad():
        torch.testing.assert_close(logits, student(ids_BT()).logits, rtol=0, atol=0)


# --------------------------------------------------------------------------- LoRA


def test_lora_teacher_holds_effective_weights_and_merged_logits_at_init():
    student = lora_student()
    teacher = Teacher(student, "ema", ema_rate=0.1)
    w0, lora_a, lora_b, s = lora_q_proj(student)
    assert s == 2.0 and lora_b.abs().sum() > 0  # a nonzero delta, so the test means something
    q_proj = teacher.model.model.layers[0].self_attn.q_proj
    assert type(q_proj) is torch.nn.Linear
    torch.testing.assert_close(q_proj.weight, w0 + s * lora_b @ lora_a, rtol=0, atol=ATOL)
    assert not torch.allclose(q_proj.weight, w0)
    merged = copy.deepcopy(student).merge_and_unload()
    with torch.no_grad():
        torch.testing.assert_close(teacher.logits(ids_BT()), merged(ids_BT()).logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(teacher.logits(ids_BT()), student(ids_BT()).logits, rtol=0, atol=1e-5)


def test_lora_ema_averages_the_product_not_the_factors():
    student, a = lora_student(), 0.5
    teacher = Teacher(student, "ema", ema_rate=a)
    old = clone_state(teacher)
    w0, lora_a, lora_b, s = lora_q_proj(student)
    a_old, b_old = lora_a.detach().clone(), lora_b.detach().clone()
    perturb([p for n, p in student.named_parameters() if "lora_" in n], scale=1.0)
    teacher.update(student)

    name = "model.layers.0.self_attn.q_proj.weight"
    phi = teacher.state_dict()[name]
    expected = (1 - a) * old[name] + a * (w0 + s * lora_b @ lora_a)
    torch.testing.assert_close(phi, expected, rtol=0, atol=ATOL)
    factors_averaged = w0 + s * ((1 - a) * b_old + a * lora_b) @ ((1 - a) * a_old + a * lora_a)
    assert (phi - factors_averaged).abs().max() > 1000 * ATOL
    for name, value in teacher.state_dict().items():  # only the LoRA-wrapped weights move
        if "q_proj" not in name and "v_proj" not in name:
            assert torch.equal(value, old[name]), name


def test_lora_modules_to_save_follow_their_trained_copy():
    student, a = lora_student(modules_to_save=["lm_head"]), 0.25
    teacher = Teacher(student, "ema", ema_rate=a)
    old = clone_state(teacher)
    trained = student.base_model.model.lm_head.modules_to_save["default"].weight
    perturb([trained])
    teacher.update(student)
    torch.testing.assert_close(
        teacher.state_dict()["lm_head.weight"],
        (1 - a) * old["lm_head.weight"] + a * trained,
        rtol=0,
        atol=ATOL,
    )


def test_lora_tied_embedding_saved_with_ensure_weight_tying_stays_tied():
    config = LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["embed_tokens"], ensure_weight_tying=True)
    student, a = get_peft_model(tiny_llama(tie=True), config), 0.25
    teacher = Teacher(student, "ema", ema_rate=a)
    old = clone_state(teacher)
    trained = student.base_model.model.model.embed_tokens.modules_to_save["default"].weight
    assert trained is student.base_model.model.lm_head.modules_to_save["default"].weight
    perturb([trained])
    teacher.update(student)
    shadow = teacher.model
    assert shadow.lm_head.weight is shadow.model.embed_tokens.weight
    name = "model.embed_tokens.weight"
    torch.testing.assert_close(teacher.state_dict()[name], (1 - a) * old[name] + a * trained, rtol=0, atol=ATOL)


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")
def test_lora_on_a_tied_weight_is_rejected_for_copies():
    config = LoraConfig(r=4, target_modules=["q_proj", "embed_tokens"], init_lora_weights=False)
    student = get_peft_model(tiny_llama(tie=True), config)
    for mode in ("ema", "frozen"):
        with pytest.raises(ValueError, match="tied weight"):
            Teacher(student, mode)
    Teacher(student, "live")


def test_live_lora_logits_equal_student_with_adapters():
    student = lora_student()
    teacher = Teacher(student, "live")
    assert teacher.model is student
    with torch.no_grad():
        expected = student(ids_BT()).logits
        with student.disable_adapter():
            base = student(ids_BT()).logits
    assert torch.equal(teacher.logits(ids_BT()), expected)
    assert not torch.allclose(expected, base)


def test_dora_is_rejected_for_ema():
    student = lora_student(use_dora=True)
    with pytest.raises(ValueError, match="plain LoRA"):
        Teacher(student, "ema")
    Teacher(student, "frozen")  # merging handles any variant


# --------------------------------------------------------------------------- checkpoints and dtypes


@pytest.mark.parametrize("make", [tiny_llama, lora_student])
def test_state_dict_round_trips_bit_exactly(make):
    student = make()
    teacher = Teacher(student, "ema", ema_rate=0.3)
    for seed in range(3):
        perturb([p for p in student.parameters() if p.requires_grad], seed=seed)
        teacher.update(student)
    state = clone_state(teacher)
    fresh = Teacher(student, "ema", ema_rate=0.3)
    fresh.load_state_dict(state)
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert torch.equal(fresh.logits(ids_BT()), teacher.logits(ids_BT()))
    with pytest.raises(ValueError, match="missing"):
        fresh.load_state_dict({})


def test_shadow_stays_fp32_for_a_bf16_student():
    student, a = tiny_llama().to(torch.bfloat16), 0.1
    teacher = Teacher(student, "ema", ema_rate=a)
    assert all(t.dtype == torch.float32 for t in teacher.state_dict().values())
    old = clone_state(teacher)
    perturb(student.parameters())
    teacher.update(student)
    theta = dict(student.named_parameters())
    for name, phi in teacher.state_dict().items():
        assert phi.dtype == torch.float32
        torch.testing.assert_close(phi, (1 - a) * old[name] + a * theta[name].float(), rtol=0, atol=ATOL)


def test_invalid_arguments():
    student = tiny_llama()
    with pytest.raises(ValueError, match="mode"):
        Teacher(student, "average")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ema_rate"):
        Teacher(student, "ema", ema_rate=0.0)
    with pytest.raises(ValueError, match="student"):
        Teacher(student, "ema").update(tiny_llama())
    with pytest.raises(ValueError, match="live"):
        Teacher(student, "live").load_state_dict({"x": torch.zeros(1)})


def test_live_teacher_scores_completions_without_lora_dropout_and_leaves_the_student_training():
    """A live teacher is the student; in the loop the student is in train mode, so scoring must switch dropout off
    (LoRA dropout 0.5 would otherwise make two scorings of the same batch differ) and switch it back on after."""
    from selfdistill.training.rollout import completion_logits, pack

    student = lora_student(lora_dropout=0.5).train()
    teacher = Teacher(student, "live")
    packed = pack([[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14]], pad_id=0)
    first = teacher.completion_logits(packed)
    assert student.training and not first.requires_grad
    assert torch.equal(teacher.completion_logits(packed), first)
    with torch.no_grad():
        student.eval()
        eval_logits = completion_logits(student, packed)
        student.train()
        torch.manual_seed(0)
        train_logits = completion_logits(student, packed)
    torch.testing.assert_close(first, eval_logits, rtol=0, atol=0)
    assert not torch.allclose(train_logits, eval_logits)  # dropout really is on in train mode: the check can fail
