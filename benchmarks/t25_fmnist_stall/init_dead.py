# Diagnosis script of the Fashion-MNIST EqProp stall; see README.md beside it.
import torch
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from tracks.data import load_dataset, train_val_split
for ds in ("fashion_mnist", "mnist"):
    x, y = load_dataset(ds, "train")
    x_tr, y_tr, _, _ = train_val_split(x, y, n_val=5000, seed=0)
    px, py = torch.from_numpy(x_tr[:2000]), torch.from_numpy(y_tr[:2000])
    for seed in range(10):
        net = EqPropMLP(EqPropConfig(sizes=(784, 512, 10)), seed=seed)
        with torch.no_grad():
            s, _ = net.free_phase(px, n_steps=30)
            a = net.layers[-1](s[-2])
        row = []
        for beta in (0.164, 0.3, 0.5, 1.0):
            dead = [c for c in range(10) if bool((a[py == c, c] + beta < 0).all())]
            row.append(f"beta {beta}: dead {dead}")
        print(ds, seed, f"out preact mean per unit {[round(v,2) for v in a.mean(0).tolist()]}", "; ".join(row))
