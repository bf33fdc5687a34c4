"""The actor's per-position temperature on OpenRLHF's real ``Actor``, and the TIS mapping.

The log-probs (and the entropy the E3 controller gets) of OpenRLHF's
``Actor.forward`` with the bridge attached are compared with a direct
computation on the embedded toy model. CPU stub: ``flash_attn`` is stubbed
while OpenRLHF's training modules are imported (``openrlhf_bridge.testing``);
sample packing (flash-attn's unpad kernels) is not run here.
"""

from __future__ import annotations

import pytest
import torch
from openrlhf.models import Actor, PolicyLoss
from openrlhf.utils.config import hierarchize
from transformers import AutoModelForCausalLM
from vllm_engine_support import engine_model_dir

from ead_vllm.params import EADParams
from openrlhf_bridge import train_ppo_ray
from openrlhf_bridge.actor import (
    PolicyTemperature,
    action_tau_range,
    row_temperatures,
    span_positions,
)
from openrlhf_bridge.workers import _attach, _EADPolicyModelActor

EAD = EADParams(tau_max=1.5, tau_min=0.3, decay=4.0, warmup=1)
BASE_T = 0.8


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    model_dir = engine_model_dir(tmp_path_factory.mktemp("bridge-actor-model"))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval()


@pytest.fixture
def actor(hf_model):
    actor = Actor(hf_model)  # OpenRLHF's Actor around an already loaded model
    actor.packing_samples = False
    yield actor
    for hook in (actor._forward_pre_hooks, actor._forward_hooks, hf_model._forward_hooks):
        hook.clear()


def batch(vocab: int):
    """Two right-padded samples as OpenRLHF's experiences hold them.

    Sample 0: 3 prompt tokens + 7 response tokens. Sample 1: a two-turn rollout,
    2 prompt tokens, a 3-token turn, 2 observation tokens, a 4-token turn, 1 pad.
    """
    g = torch.Generator().manual_seed(0)
    sequences = torch.randint(4, vocab, (2, 12), generator=g)
    attention_mask = torch.ones(2, 12, dtype=torch.long)
    attention_mask[0, 10:] = 0
    attention_mask[1, 11:] = 0
    sequences[attention_mask == 0] = 0
    action_mask = torch.zeros(2, 11, dtype=torch.long)  # column p: token p + 1 is an action
    action_mask[0, 2:9] = 1
    action_mask[1, 1:4] = 1
    action_mask[1, 6:10] = 1
    spans = {0: [(3, 10)], 1: [(2, 5), (7, 11)]}  # token ranges of each turn
    return sequences, attention_mask, action_mask, spans


def direct_logprobs(model, sequences, attention_mask, spans, ead, base):
    """log softmax(logits / (base * tau_t)) of every action token, by hand, sample by sample."""
    expected = {}
    for b, ranges in spans.items():
        length = int(attention_mask[b].sum())
        with torch.no_grad():
            logits = model(sequences[b : b + 1, :length]).logits[0].double()
        for start, end in ranges:
            for t, pos in enumerate(range(start, end)):
                tau = 1.0 if ead is None else ead.temperature_at(float(t))
                logp = torch.log_softmax(logits[pos - 1] / (base * tau), dim=-1)
                expected[(b, pos - 1)] = (logp[sequences[b, pos]].item(), logp)
    return expected


def test_span_positions_restart_at_every_turn():
    _, _, action_mask, _ = batch(100)
    t = span_positions(action_mask)
    assert t[0, 2:9].tolist() == list(range(7))
    assert t[1, 1:4].tolist() == [0, 1, 2] and t[1, 6:10].tolist() == [0, 1, 2, 3]
    assert t[action_mask == 0].eq(0).all()


def test_row_temperatures_layout():
    _, _, action_mask, _ = batch(100)
    rows = row_temperatures(action_mask, 12, base_temperature=2.0, ead=EAD)
    assert rows.shape == (2, 12)
    assert rows[0, 2].item() == pytest.approx(2.0)  # t = 0 < warmup
    assert rows[0, 3].item() == pytest.approx(2.0 * EAD.temperature_at(1.0))
    assert rows[1, 6].item() == pytest.approx(2.0)  # second turn restarts at t = 0
    assert rows[0, 0].item() == rows[0, 11].item() == 2.0  # prompt and last row: base only


@pytest.mark.parametrize("ead", [EAD, None], ids=["positional-ead", "base-temperature-only"])
def test_actor_logprobs_equal_direct_computation(actor, hf_model, ead):
    sequences, attention_mask, action_mask, spans = batch(hf_model.config.vocab_size)
    control = PolicyTemperature.attach(actor, base_temperature=1.0)
    control.set_state(BASE_T, None if ead is None else ead.to_extra_args())
    assert actor.temperature == 1.0  # the bridge applies the whole temperature
    with torch.no_grad():
        got = actor(sequences, action_mask, attention_mask)
    expected = direct_logprobs(hf_model, sequences, attention_mask, spans, ead, BASE_T)
    assert got.shape == action_mask.shape
    for (b, col), (value, _) in expected.items():
        assert got[b, col].item() == pytest.approx(value, rel=2e-6, abs=2e-5), (b, col)
    assert got[action_mask == 0].eq(0).all()


def test_entropy_is_measured_on_the_annealed_distribution(actor, hf_model):
    sequences, attention_mask, action_mask, spans = batch(hf_model.config.vocab_size)
    control = PolicyTemperature.attach(actor, base_temperature=BASE_T)
    control.set_state(BASE_T, EAD.to_extra_args())
    with torch.no_grad():
        actor(sequences, action_mask, attention_mask)  # not measured
        with control.measuring():
            actor(sequences, action_mask, attention_mask)
    total, tokens = control.pop_entropy()
    expected = direct_logprobs(hf_model, sequences, attention_mask, spans, EAD, BASE_T)
    want = sum(float(-(lp.exp() * lp).sum()) for _, lp in expected.values())
    assert tokens == len(expected) == 14
    assert total == pytest.approx(want, rel=1e-4, abs=1e-5)  # fp32 vs fp64 reference
    assert control.pop_entropy() == (0.0, 0.0)


def test_training_forward_and_openrlhf_entropy_use_the_same_policy(actor, hf_model):
    """ActorPPOTrainer's call (return_output, return_entropy) sees the scaled logits."""
    sequences, attention_mask, action_mask, spans = batch(hf_model.config.vocab_size)
    control = PolicyTemperature.attach(actor, base_temperature=BASE_T)
    control.set_state(BASE_T, EAD.to_extra_args())
    log_probs, output = actor(
        sequences,
        action_mask,
        attention_mask=attention_mask,
        return_output=True,
        return_entropy=True,
    )
    assert log_probs.requires_grad
    log_probs.sum().backward()  # the scaling keeps the graph intact
    expected = direct_logprobs(hf_model, sequences, attention_mask, spans, EAD, BASE_T)
    for (b, col), (value, lp) in expected.items():
        assert log_probs[b, col].item() == pytest.approx(value, rel=2e-6, abs=2e-5)
        assert output.entropy[b, col].item() == pytest.approx(
            float(-(lp.exp() * lp).sum()), abs=1e-4
        )
    hf_model.zero_grad()


def test_model_calls_outside_actor_forward_are_untouched(actor, hf_model):
    control = PolicyTemperature.attach(actor, base_temperature=BASE_T)
    control.set_state(BASE_T, EAD.to_extra_args())
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        raw = hf_model(ids).logits
        control.detach()
        plain = hf_model(ids).logits
    assert torch.equal(raw, plain)
    assert actor.temperature == BASE_T


def test_worker_attaches_only_when_the_actor_needs_the_temperature(actor):
    def args_for(*flags):
        namespace, _ = train_ppo_ray.parse_args(
            ["--actor.model_name_or_path", "toy", "--vllm.num_engines", "1",
             "--algo.advantage.estimator", "group_norm", "--rollout.n_samples_per_prompt", "4",
             "--rollout.temperature", "0.7", *flags]
        )  # fmt: skip
        return hierarchize(namespace)

    assert _attach(actor, args_for("--ead.enable", "--ead.d0", "100")) is None  # TIS
    control = _attach(actor, args_for("--e3.temperature_controller"))
    assert isinstance(control, PolicyTemperature) and control.base_temperature == 0.7
    worker = object.__new__(_EADPolicyModelActor)
    worker.bridge_temperature = control
    worker.bridge_set_state(0.9, EAD.to_extra_args())
    assert control.base_temperature == 0.9 and control.ead == EAD
    assert worker.bridge_pop_entropy() == (0.0, 0.0)


def test_tis_configures_openrlhf_truncated_importance_sampling():
    namespace, config = train_ppo_ray.parse_args(
        ["--actor.model_name_or_path", "toy", "--vllm.num_engines", "1",
         "--algo.advantage.estimator", "group_norm", "--rollout.n_samples_per_prompt", "4",
         "--ead.enable", "--ead.preset", "reference", "--ead.tis_cap", "1.5"]
    )  # fmt: skip
    args = hierarchize(namespace)
    assert config.ead.correction == "tis" and not config.actor_temperature
    # what openrlhf.cli.train_ppo_ray.train() derives: vLLM returns processed (annealed) log-probs
    assert args.algo.advantage.is_correction_level != "off"
    # the loss exactly as ActorPPOTrainer builds it from args
    loss_fn = PolicyLoss(
        clip_eps_low=0.2,
        clip_eps_high=0.2,
        is_correction_level=args.algo.advantage.is_correction_level,
        is_correction_mode=args.algo.advantage.is_correction_mode,
        is_correction_gating=args.algo.advantage.is_correction_gating,
        is_correction_threshold=args.algo.advantage.is_correction_threshold,
    )
    old = torch.log(torch.tensor([[0.5, 0.2, 0.9, 0.05]]))  # pi_train at the base temperature
    rollout = torch.log(torch.tensor([[0.25, 0.4, 0.9, 0.01]]))  # pi_rollout (annealed)
    mask = torch.ones(1, 4)
    loss, _, _, vllm_kl, filtered = loss_fn(
        old, old, torch.ones(1, 4), mask, rollout_log_probs=rollout
    )
    weights = torch.clamp(torch.exp(old - rollout), max=1.5)  # truncated IS: min(ratio, cap)
    assert loss.item() == pytest.approx(-weights.mean().item(), rel=1e-6)
    assert filtered.item() == pytest.approx(0.5)  # two ratios above the cap
    assert vllm_kl.item() == pytest.approx((rollout - old).mean().item(), rel=1e-6)


def test_packed_samples_get_the_same_per_row_temperatures(actor, hf_model, monkeypatch):
    """--ds.packing_samples: OpenRLHF packs the batch into one row; the temperatures follow.

    flash_attn.bert_padding is plain torch, but flash-attn cannot be installed without
    CUDA: the three helpers OpenRLHF uses are re-implemented here with its semantics.
    With eager attention the packed row attends across samples, so the expected values
    come from the same packed forward; what is checked is the temperature layout.
    """
    import openrlhf.models.ring_attn_utils as ring_attn_utils

    from openrlhf_bridge.testing import torch_padding_helpers

    for name, helper in torch_padding_helpers().items():
        monkeypatch.setattr(ring_attn_utils, name, helper)

    sequences, attention_mask, action_mask, spans = batch(hf_model.config.vocab_size)
    actor.packing_samples = True
    control = PolicyTemperature.attach(actor, base_temperature=BASE_T)
    control.set_state(BASE_T, EAD.to_extra_args())
    with torch.no_grad(), control.measuring():
        got = actor(sequences, action_mask, attention_mask)
    assert control.pop_entropy()[1] == 14

    keep = attention_mask.flatten().bool()
    packed = sequences.flatten()[keep].unsqueeze(0)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0).flatten()[keep].unsqueeze(0)
    with torch.no_grad():
        logits = hf_model(packed, position_ids=positions).logits[0].double()
    packed_index = torch.full(sequences.shape, -1, dtype=torch.long)
    packed_index.view(-1)[keep] = torch.arange(int(keep.sum()))
    for b, ranges in spans.items():
        for start, end in ranges:
            for t, pos in enumerate(range(start, end)):
                row = logits[packed_index[b, pos - 1]] / (BASE_T * EAD.temperature_at(float(t)))
                want = torch.log_softmax(row, dim=-1)[sequences[b, pos]].item()
                assert got[b, pos - 1].item() == pytest.approx(want, rel=2e-6, abs=2e-5)


@pytest.mark.parametrize("grad", [False, True], ids=["experience", "training"])
def test_hook_divides_the_model_logits_in_place(actor, hf_model, grad):
    """No [tokens, V] copy: the logits Actor.forward uses are the model's own fp32 tensor,
    divided in place (where OpenRLHF divides by its scalar temperature)."""
    sequences, attention_mask, action_mask, _ = batch(hf_model.config.vocab_size)
    seen = {}

    def record(module, args, output):  # registered first: runs before the bridge's hook
        seen["ptr"] = output["logits"].data_ptr()
        seen["raw"] = output["logits"].detach().clone()

    hf_model.register_forward_hook(record)
    control = PolicyTemperature.attach(actor, base_temperature=BASE_T)
    control.set_state(BASE_T, EAD.to_extra_args())
    with torch.set_grad_enabled(grad):
        _, output = actor(sequences, action_mask, attention_mask, return_output=True)
    assert output["logits"].dtype == torch.float32
    assert output["logits"].data_ptr() == seen["ptr"]  # the same storage: divided in place
    scale = row_temperatures(action_mask, sequences.shape[1], base_temperature=BASE_T, ead=EAD)
    torch.testing.assert_close(output["logits"].detach(), seen["raw"] / scale.unsqueeze(-1))


def test_low_precision_logits_get_only_the_cast_openrlhf_makes():
    logits = torch.randn(2, 3, 7).to(torch.bfloat16)
    scale = torch.tensor([[1.0, 0.5, 0.25], [2.0, 1.0, 0.1]])
    out = PolicyTemperature.divide(logits, scale.unsqueeze(-1))
    assert out.dtype == torch.float32  # the fp32 copy OpenRLHF's Actor.forward makes anyway
    torch.testing.assert_close(out, logits.float() / scale.unsqueeze(-1))
    fp32 = torch.randn(2, 3, 7)
    assert PolicyTemperature.divide(fp32, 2.0).data_ptr() == fp32.data_ptr()


def test_action_tau_range_is_the_schedule_over_the_action_tokens():
    _, _, action_mask, _ = batch(100)
    low, high = action_tau_range([action_mask[:1], action_mask[1:]], EAD)
    taus = [EAD.temperature_at(float(t)) for t in range(7)]  # sample 0: 7 tokens, the longest
    assert low == pytest.approx(min(taus)) and high == pytest.approx(max(taus))
    assert low == pytest.approx(EAD.tau_min)  # late tokens: gradients scaled by 1 / 0.3
    assert action_tau_range([torch.zeros(1, 4, dtype=torch.long)], EAD) == (1.0, 1.0)
