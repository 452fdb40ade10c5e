"""tinyevo.train.optim against torch.optim: the same update and learning rates to the last bit on
CPU, torch's state dicts load, bad state is refused; and the training loop no longer imports
torch's compiler."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import REPO
from tinyevo.train.optim import SGD, CosineSchedule


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _batches(n: int):
    g = torch.Generator().manual_seed(7)
    return [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def _train(model, opt, sched, batches, epochs: int, steps_per_epoch: int):
    lrs = []
    it = iter(batches)
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        for _ in range(steps_per_epoch):
            x, y = next(it)
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        if sched is not None:
            sched.step()
    return lrs


@pytest.mark.parametrize("momentum,wd,cosine", [(0.9, 1e-6, True), (0.9, 0.0, False), (0.0, 1e-4, True),
                                                (0.0, 0.0, False)])
def test_sgd_and_cosine_equal_torch_bit_for_bit(momentum, wd, cosine):
    epochs, steps = 6, 3
    batches = _batches(epochs * steps)
    a, b = _net(0), _net(0)
    oa = torch.optim.SGD(a.parameters(), lr=0.05, momentum=momentum, weight_decay=wd)
    ob = SGD(b.parameters(), lr=0.05, momentum=momentum, weight_decay=wd)
    sa = torch.optim.lr_scheduler.CosineAnnealingLR(oa, T_max=epochs) if cosine else None
    sb = CosineSchedule(ob, T_max=epochs) if cosine else None
    la = _train(a, oa, sa, batches, epochs, steps)
    lb = _train(b, ob, sb, batches, epochs, steps)
    assert la == lb and (not cosine or la[1] < la[0])
    if cosine:
        assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"]
    for (n, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), n
    assert not torch.equal(_net(0).state_dict()["0.weight"], b.state_dict()["0.weight"])  # it trained


@pytest.mark.parametrize("t_max", [1, 2, 5, 20])
def test_cosine_learning_rates_equal_torch(t_max):
    p = [nn.Parameter(torch.zeros(1))]
    ta = torch.optim.SGD(p, lr=0.1)
    sa = torch.optim.lr_scheduler.CosineAnnealingLR(ta, T_max=t_max)
    tb = SGD(p, lr=0.1)
    sb = CosineSchedule(tb, T_max=t_max)
    seq_a, seq_b = [], []
    for _ in range(t_max + 2):  # past T_max too
        ta.step()
        sa.step()
        sb.step()
        seq_a.append(ta.param_groups[0]["lr"])
        seq_b.append(tb.param_groups[0]["lr"])
    assert seq_a == seq_b and seq_a[t_max - 1] == 0.0


def test_resume_from_torch_state_dicts_continues_identically():
    epochs, steps = 4, 2
    batches = _batches(epochs * steps)
    ref = _net(1)
    o_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-5)
    s_ref = torch.optim.lr_scheduler.CosineAnnealingLR(o_ref, T_max=epochs)
    _train(ref, o_ref, s_ref, batches[:4], 2, steps)
    # a checkpoint written with torch.optim (the loop's earlier checkpoints), resumed with ours
    mine = _net(99)
    mine.load_state_dict(ref.state_dict())
    o_mine = SGD(mine.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-5)
    o_mine.load_state_dict(o_ref.state_dict())
    s_mine = CosineSchedule(o_mine, T_max=epochs)
    s_mine.load_state_dict(s_ref.state_dict())
    la = _train(ref, o_ref, s_ref, batches[4:], 2, steps)
    lb = _train(mine, o_mine, s_mine, batches[4:], 2, steps)
    assert la == lb
    for pa, pb in zip(ref.state_dict().values(), mine.state_dict().values()):
        assert torch.equal(pa, pb)
    # and our own state dicts round-trip
    again = SGD(_net(1).parameters(), lr=0.1, momentum=0.9)
    again.load_state_dict(o_mine.state_dict())
    bufs = [again.state[p]["momentum_buffer"] for p in again.param_groups[0]["params"]]
    assert all(torch.equal(x, o_mine.state[p]["momentum_buffer"])
               for x, p in zip(bufs, o_mine.param_groups[0]["params"]))


def test_bad_state_and_settings_are_refused():
    net = _net(0)
    opt = SGD(net.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="one group of 6 tensors"):
        opt.load_state_dict(SGD(nn.Linear(2, 2).parameters(), lr=0.1).state_dict())
    nesterov = torch.optim.SGD(_net(0).parameters(), lr=0.1, momentum=0.9, nesterov=True).state_dict()
    with pytest.raises(ValueError, match="Nesterov"):
        opt.load_state_dict(nesterov)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        SGD(net.parameters(), lr=float("nan"))
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="T_max 3, this schedule 5"):
        CosineSchedule(opt, 5).load_state_dict(CosineSchedule(opt, 3).state_dict())


def test_a_training_does_not_import_the_compiler():
    code = ("import sys; sys.path.insert(0, 'workflow'); import numpy as np; "
            "from tinyevo.train.loop import fit; from torch import nn; "
            "m = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)); "
            "x = np.random.default_rng(0).integers(0, 255, (20, 4, 4, 1), dtype=np.uint8); "
            "y = np.arange(20) % 3; "
            "fit(m, (x, y), None, ([0.5], [0.25]), {'epochs': 2, 'batch_size': 8, 'schedule': 'cosine'}, "
            "progress=False); "
            "print(sorted(k for k in sys.modules if k.startswith('torch._dynamo'))[:3])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
