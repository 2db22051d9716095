"""Track 25's quick setting (2000 training images, 3 epochs, seed 0) for the Fashion-MNIST EqProp recipe,
optionally changed; prints the validation accuracy (500 images of train_val_split(train, 500, seed 0))."""
import sys, torch
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.train import train
from tracks.data import load_dataset, train_val_split
from tracks.shared.recipes import get_recipe
extra = eval(sys.argv[1]) if len(sys.argv) > 1 else {}
x, y = load_dataset("fashion_mnist", "train")
x_tr, y_tr, x_val, y_val = train_val_split(x, y, n_val=500, seed=0)
x_tr, y_tr, x_val, y_val = map(torch.from_numpy, (x_tr[:2000], y_tr[:2000], x_val, y_val))
cfg = get_recipe("fmnist_784_512_10_eqprop", epochs=3, seed=0, **extra)
h = train(EqPropMLP(EqPropConfig(sizes=(784, 512, 10)), seed=0), x_tr, y_tr, cfg, x_val=x_val, y_val=y_val, progress=False)
print(extra, cfg.beta, cfg.lr, cfg.warmup_steps, "val", h["val_acc"])
