"""Distil AnimeGANv2 Hayao into the hayao-lite student. One command, fixed seed, resumable.

    .venv/bin/python training/distill.py --teacher-models ../shared/models \
        --photos ../shared/photos --out /tmp/animelite-lite/run

Steps: pull + convert the Hayao teacher (ONNX, fp32) into <cache>/models;
run the teacher on --variants rescaled/flipped/jittered copies of each training
photo (ONNX Runtime) and cache the pairs; train the student (PyTorch,
--threads threads) on random crops of those pairs with L1 + gradient L1 to the
teacher; export <out>/hayao_lite.onnx (opset 17, NCHW, dynamic H and W, [-1, 1],
BatchNorm folded).
Re-running with the same --out resumes from <out>/ckpt.pt. The loss log is
<out>/loss.tsv. Training needs torch (the ``test`` extra); the runtime does not.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data  # noqa: E402
from student import ARCH, Student, export_onnx  # noqa: E402


def grad_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between the horizontal and vertical finite differences (edges, line work)."""
    dxa, dxb = a[..., :, 1:] - a[..., :, :-1], b[..., :, 1:] - b[..., :, :-1]
    dya, dyb = a[..., 1:, :] - a[..., :-1, :], b[..., 1:, :] - b[..., :-1, :]
    return (dxa - dxb).abs().mean() + (dya - dyb).abs().mean()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher-models", type=Path, required=True, help="mirror folder holding the Hayao .tflite")
    ap.add_argument("--photos", type=Path, required=True, help="photos folder (scenes/, portraits/, MANIFEST.tsv)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/animelite-distill"))
    ap.add_argument("--variants", type=int, default=6, help="teacher-stylized copies of each training photo")
    ap.add_argument("--crop", type=int, default=192)
    ap.add_argument("--iters", type=int, default=3200)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for the teacher and for training")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--grad-weight", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-minutes", type=float, default=0, help="stop training early after this long (0: no limit)")
    ap.add_argument("--stop-at", type=int, default=0,
                    help="stop after this many iterations of the --iters schedule "
                         "(reproduces a run cut by --max-minutes)")
    ap.add_argument("--export-only", action="store_true", help="export <out>/ckpt.pt as it is and stop")
    args = ap.parse_args(argv)
    if args.export_only:
        state = torch.load(args.out / "ckpt.pt", weights_only=False)
        model = Student(**ARCH)
        model.load_state_dict(state["model"])
        export_onnx(model, args.out / "hayao_lite.onnx")
        print(f"exported {args.out / 'hayao_lite.onnx'} at iteration {state['iter']}")
        return 0

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = open(args.out / "train.log", "a")

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    from animelite.store import ModelStore

    store = ModelStore(args.cache / "models")
    store.pull("hayao", mirror=args.teacher_models)
    teacher = store.runtime_path("hayao")
    t0 = time.time()
    files = data.build_variants(args.photos, teacher, args.cache / "variants", args.variants, args.seed, log,
                                threads=args.threads)
    pairs = []
    for f in files:
        with np.load(f) as z:
            if min(z["x"].shape[:2]) >= args.crop:
                x = torch.from_numpy(z["x"]).permute(2, 0, 1).contiguous()
                # the whole copy average-pooled 4x4: the input of the student's context branch
                pooled = F.avg_pool2d(x[None].float() / 127.5 - 1.0, 4)[0]
                pairs.append((x, torch.from_numpy(z["y"]), pooled))
    log(f"teacher variants ready: {len(pairs)} of {len(files)} usable at crop {args.crop} ({time.time() - t0:.0f} s)")

    def batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Random crops (input, teacher output) and each crop's whole photo, pooled."""
        xb, yb, pb = [], [], []
        c = args.crop
        for j in torch.randint(0, len(pairs), (args.batch,), generator=gen).tolist():
            x, y, pooled = pairs[j]
            top = int(torch.randint(0, x.shape[1] - c + 1, (1,), generator=gen))
            left = int(torch.randint(0, x.shape[2] - c + 1, (1,), generator=gen))
            xb.append(x[:, top:top + c, left:left + c])
            yb.append(y[:, top:top + c, left:left + c])
            pb.append(pooled)
        return torch.stack(xb).float() / 127.5 - 1.0, torch.stack(yb).float(), pb

    model = Student(**ARCH)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(args.seed)
    start = 0
    ckpt = args.out / "ckpt.pt"
    loss_log = args.out / "loss.tsv"
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start = state["iter"]
        log(f"resumed at iteration {start}")
    elif not loss_log.exists():
        loss_log.write_text("iter\tl1\tgrad\tlr\tseconds\n")

    def save(i: int) -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "iter": i,
                    "args": vars(args)}, tmp)
        tmp.replace(ckpt)

    t_start = time.time()
    model.train()
    i = start
    for i in range(start, args.iters):
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * i / args.iters))
        if i < 20:
            lr *= (i + 1) / 20
        for g in opt.param_groups:
            g["lr"] = lr
        x, y, pooled = batch(gen)
        pred = model(x, pooled)
        l1 = F.l1_loss(pred, y)
        gl = grad_l1(pred, y)
        loss = l1 + args.grad_weight * gl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with open(loss_log, "a") as fh:
            fh.write(f"{i}\t{l1.item():.5f}\t{gl.item():.5f}\t{lr:.6f}\t{time.time() - t_start:.1f}\n")
        if (i + 1) % 25 == 0:
            log(f"iter {i + 1}/{args.iters} l1 {l1.item():.4f} grad {gl.item():.4f} lr {lr:.5f} "
                f"{(time.time() - t_start) / (i + 1 - start):.2f} s/iter")
            save(i + 1)
        if args.stop_at and i + 1 >= args.stop_at:
            log(f"stopping at iteration {i + 1} (--stop-at)")
            i += 1
            save(i)
            break
        if args.max_minutes and time.time() - t_start > args.max_minutes * 60:
            log(f"stopping early at iteration {i + 1} (--max-minutes {args.max_minutes})")
            i += 1
            save(i)
            break
    else:
        i = args.iters
        save(i)
    export_onnx(model, args.out / "hayao_lite.onnx")
    log(f"exported {args.out / 'hayao_lite.onnx'} after {i} iterations; training {time.time() - t_start:.0f} s, "
        f"total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
