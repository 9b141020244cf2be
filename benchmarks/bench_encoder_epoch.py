"""Cost of ContrastiveSNPEncoder.fit per epoch vs a minimal hand-written PyTorch loop.

Both do the same work: the paper-sized encoders (h_v 512 -> 250 -> 200 -> 150 -> 100,
SNPs 1060 -> 400 -> 600 -> 400 -> 300 -> 150 -> 100), Adam (lr 1e-3), batches of 50 from
the same class-balanced sampler, the equation (5) loss with the paper's weights. The
estimator's time includes its input validation, label encoding and skorch set-up; the loop
builds its model and optimiser too. Runs are interleaved and the median is reported.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_encoder_epoch.py [n_samples]``
Writes ``benchmarks/results/bench_encoder_epoch.md``. Target: ratio <= 1.2.
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sklearn_cgni.genetics import ContrastiveSNPEncoder, StratifiedBatchSampler  # noqa: E402
from sklearn_cgni.nn import CGNIContrastiveLoss, ContrastiveEncoders  # noqa: E402

torch.set_num_threads(1)
N_IMG, N_SNP = 512, 1060


def hand_loop(h_v, x_g, y, epochs, seed=0):
    torch.manual_seed(seed)
    model = ContrastiveEncoders(N_IMG, N_SNP)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = CGNIContrastiveLoss()
    h_v, x_g, y_t = torch.from_numpy(h_v), torch.from_numpy(x_g), torch.from_numpy(y)
    sampler = StratifiedBatchSampler(y, 50, random_state=seed)
    model.train()
    for _ in range(epochs):
        for idx in sampler:
            idx = torch.as_tensor(idx)
            opt.zero_grad()
            z_v, z_g = model(h_v[idx], x_g[idx])
            loss = crit(z_v, z_g, y_t[idx])
            loss.backward()
            opt.step()
    return model


def estimator(X, y, epochs):
    return ContrastiveSNPEncoder(image_features=N_IMG, max_epochs=epochs, device="cpu", random_state=0).fit(X, y)


def main(n=2000, repeats=5):
    rng = np.random.default_rng(0)
    h_v = rng.normal(size=(n, N_IMG)).astype(np.float32)
    x_g = rng.binomial(2, 0.3, size=(n, N_SNP)).astype(np.float32)
    y = (rng.random(n) < 0.36).astype(np.int64)
    X = np.hstack([h_v, x_g])
    results = {}
    for epochs in (1, 3):
        t_est, t_loop = [], []
        estimator(X, y, 1)  # warm-up (imports, allocator)
        hand_loop(h_v, x_g, y, 1)
        for _ in range(repeats):
            t0 = time.perf_counter()
            estimator(X, y, epochs)
            t_est.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            hand_loop(h_v, x_g, y, epochs)
            t_loop.append(time.perf_counter() - t0)
        results[epochs] = (float(np.median(t_est)), float(np.median(t_loop)))
    lines = [
        "# ContrastiveSNPEncoder.fit vs a hand-written PyTorch loop",
        "",
        f"n={n} participants, 512 imaging features, 1060 SNPs, batch 50 "
        f"({int(np.ceil(n / 50))} steps/epoch), torch {torch.__version__}, 1 thread, median of "
        f"{repeats} interleaved runs. Machine shared with other jobs: only the ratio is meaningful.",
        "",
        "| epochs | estimator fit (s) | hand loop (s) | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for epochs, (te, tl) in results.items():
        lines.append(f"| {epochs} | {te:.3f} | {tl:.3f} | {te / tl:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).parent / "results" / "bench_encoder_epoch.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
