# Diagnosis script of the Fashion-MNIST EqProp stall; see README.md beside it.
import sys, torch, numpy as np
from models.checkpoint import load_checkpoint
from tracks.data import load_dataset, train_val_split
x, y = load_dataset("fashion_mnist", "train")
x_tr, y_tr, x_val, y_val = train_val_split(x, y, n_val=5000, seed=0)
x_val, y_val = torch.from_numpy(x_val), torch.from_numpy(y_val)
x_tr, y_tr = torch.from_numpy(x_tr[:10000]), torch.from_numpy(y_tr[:10000])
beta = 0.16393245237809825
for seed in range(5):
    net, meta = load_checkpoint(f"runs/t25_5seeds_fashion_mnist/checkpoints/t25_fashion_mnist_eqprop_seed{seed}.pt")
    with torch.no_grad():
        for nm, xx, yy in (("val", x_val, y_val), ("train10k", x_tr, y_tr)):
            s, _ = net.free_phase(xx, n_steps=30)
            out = s[-1]; a = net.layers[-1](s[-2])
            pred = out.argmax(1)
            acc = (pred == yy).float().mean().item()
            percls = [((pred == yy) & (yy == c)).sum().item() / (yy == c).sum().item() for c in range(10)]
            # target unit dead: preact + beta*(1-0) < 0 -> nudged output still 0 -> no update
            tgt_a = a[torch.arange(len(yy)), yy]
            dead_t = (tgt_a + beta < 0).float()
            dead_frac_cls = [dead_t[yy == c].mean().item() for c in range(10)]
            maxout = out.max(0).values
            print(f"seed {seed} {nm} acc {acc:.4f} per-class " + " ".join(f"{p:.2f}" for p in percls))
            print(f"   frac samples with target preact < -beta per class " + " ".join(f"{p:.2f}" for p in dead_frac_cls))
            print(f"   output unit max activation over set " + " ".join(f"{p:.2f}" for p in maxout.tolist()))
            print(f"   output bias " + " ".join(f"{p:.2f}" for p in net.layers[-1].bias.tolist()))
            hid = s[0]; print(f"   hidden units never active: {(hid.max(0).values <= 0).sum().item()}/{hid.shape[1]}, saturated-always {(hid.min(0).values>=1).sum().item()}")
