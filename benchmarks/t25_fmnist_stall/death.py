"""When does an output unit die (target preact < -beta on every probe sample of its class)?"""
import sys, time, torch
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.train import train
from tracks.data import load_dataset, train_val_split
from tracks.shared.recipes import get_recipe
seed = int(sys.argv[1]); n_train = int(sys.argv[2]); epochs = int(sys.argv[3]); sched_epochs = int(sys.argv[4])
extra = eval(sys.argv[5]) if len(sys.argv) > 5 else {}
x, y = load_dataset("fashion_mnist", "train")
x_tr, y_tr, x_val, y_val = train_val_split(x, y, n_val=5000, seed=0)
x_tr, y_tr = torch.from_numpy(x_tr[:n_train]), torch.from_numpy(y_tr[:n_train])
x_val, y_val = torch.from_numpy(x_val), torch.from_numpy(y_val)
cfg = get_recipe("mnist_784_512_10_eqprop", epochs=sched_epochs, seed=seed, **extra)
net = EqPropMLP(EqPropConfig(sizes=(784, 512, 10)), seed=seed)
probe_x, probe_y = x_tr[:1000], y_tr[:1000]
died = {}
def cb(ep, bi, n):
    if bi % 20: return
    with torch.no_grad():
        s, _ = n.free_phase(probe_x, n_steps=30)
        a = n.layers[-1](s[-2])
        for c in range(10):
            m = probe_y == c
            if c not in died and bool((a[m, c] + cfg.beta < 0).all()):
                died[c] = (ep, bi); print(f"seed {seed}: output unit {c} dead at epoch {ep} batch {bi}", flush=True)
def ecb(ep, h):
    print(f"seed {seed} epoch {ep} val {h['val_acc'][-1]:.4f} dead {died}", flush=True)
    if ep + 1 >= epochs: raise KeyboardInterrupt
t = time.time()
try:
    train(net, x_tr, y_tr, cfg, x_val=x_val, y_val=y_val, progress=False, callback=cb, epoch_callback=ecb)
except KeyboardInterrupt:
    pass
print(f"seed {seed} n_train {n_train} {extra} done {time.time()-t:.0f}s dead {died}", flush=True)
